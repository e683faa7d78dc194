"""Request and response bodies of the API; their pydantic models are also the OpenAPI schema.

Checks that protect the message live here, so every violation becomes a 422 that names its field:
header injection (CR/LF) in any header-bound field, invalid addresses, invalid base64, custom headers
that would collide with the ones the gateway sets. The ``type`` of those errors is stable
(``invalid_address``, ``header_injection``, ``invalid_base64``, ``reserved_header``,
``invalid_header_name``) so clients can branch on it.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from postwire.core.addresses import AddressError, Mailbox, has_line_break, parse_mailbox

# Headers the gateway writes itself (or that only MTAs may write): a custom value would conflict.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "reply-to", "sender", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition", "return-path", "received",
    "dkim-signature",
})
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext: printable ASCII except ":"
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
_WHITESPACE = re.compile(rb"\s+")


def check_custom_headers(headers: dict[str, str]) -> dict[str, str]:
    """Extra header fields a customer gives: well-formed names, none that Postwire sets from the message's
    fields, no line breaks in values (they would let a caller inject headers or a body)."""
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise PydanticCustomError("invalid_header_name", "header name {name!r} must be printable "
                                      "ASCII without spaces or ':'", {"name": name})
        if name.lower() in RESERVED_HEADERS:
            raise PydanticCustomError("reserved_header", "header {name!r} is set by Postwire from the "
                                      "message fields; use those instead", {"name": name})
        if has_line_break(value):
            raise PydanticCustomError("header_injection", "header {name!r}: line breaks (CR/LF) are "
                                      "not allowed in header fields", {"name": name})
    return headers


def mailbox_value(value: Any) -> Mailbox:
    if isinstance(value, Mailbox):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be a string like \"Name <user@example.com>\"")
    try:
        return parse_mailbox(value)
    except AddressError as e:
        kind = "header_injection" if "line breaks" in str(e) else "invalid_address"
        raise PydanticCustomError(kind, str(e)) from None


def base64_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "must be a base64 string")
    try:  # line-wrapped base64 (as MIME writes it) is fine; any other stray character is not
        return base64.b64decode(_WHITESPACE.sub(b"", value.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PydanticCustomError("invalid_base64", "content is not valid base64") from None


def naive_as_utc(value: Any) -> Any:
    """A datetime (or ISO string) without an offset is UTC, as everywhere in the API."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value  # pydantic explains what is wrong with it
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# Every date and time the API takes must lie in this range. Beyond it, arithmetic on it (a month later, a
# day's UTC offset, protobuf timestamps, PostgreSQL) overflowed into 500s and 503s (fuzzer finding).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def datetime_in_range(value: datetime) -> datetime:
    """``value`` (aware) unless it is outside [EARLIEST, LATEST): then a ``datetime_out_of_range`` error."""
    if not EARLIEST <= value < LATEST:
        raise PydanticCustomError("datetime_out_of_range", "must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


def no_line_break(value: str) -> str:
    if has_line_break(value):
        raise PydanticCustomError("header_injection", "line breaks (CR/LF) are not allowed in header fields")
    return value


def content_type_value(value: str) -> str:
    no_line_break(value)
    if not CONTENT_TYPE.match(value):
        raise PydanticCustomError("invalid_content_type", "must look like type/subtype, e.g. image/png")
    return value.lower()


MailboxField = Annotated[
    Mailbox, PlainValidator(mailbox_value), PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["Jane Doe <jane@example.com>"],
                    "description": "`user@example.com` or `Name <user@example.com>`."})]
Base64Content = Annotated[bytes, PlainValidator(base64_value), WithJsonSchema(
    {"type": "string", "contentEncoding": "base64", "description": "The file's bytes, base64-encoded."})]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, examples=["invoice.pdf"])
    content_type: str = Field(default="application/octet-stream", examples=["application/pdf"])
    content: Base64Content

    @field_validator("filename")
    @classmethod
    def _filename(cls, v: str) -> str:
        return no_line_break(v)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, v: str) -> str:
        return content_type_value(v)


class SendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inline_css: bool = Field(default=True, description="Inline the HTML part's <style> rules.")
    css_engine: Literal["css-inline", "premailer"] | None = Field(
        default=None, description="CSS inliner; the transformer's default (css-inline) when omitted.")
    track_clicks: bool = Field(default=False, description="Rewrite the HTML's links to tracked redirects "
                               "(a `clicked` event per click).")
    track_opens: bool = Field(default=False, description="Add an open-tracking pixel (`opened` events).")
    track_bounces: bool = Field(default=True, description="Send with a VERP return path so bounces come "
                                "back to Postwire as events; false keeps `from` as the envelope sender.")
    prevent_scam: bool = Field(default=False, description="With click tracking: leave links alone whose "
                               "visible text is itself a URL (mail clients flag those when rewritten).")
    max_deliver_time: AwareDatetime | None = Field(
        default=None, description="Give up after this time (ISO 8601; UTC when no offset): a recipient not "
        "delivered by then fails with reason `expired`. Unset: the dispatcher's delivery window.")

    @field_validator("max_deliver_time", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> Any:
        return naive_as_utc(v)

    @field_validator("max_deliver_time")
    @classmethod
    def _in_range(cls, v: datetime | None) -> datetime | None:
        return None if v is None else datetime_in_range(v)


class RecipientEntry(BaseModel):
    """A recipient with its own personalisation variables, laid over the message's `data`."""

    model_config = ConfigDict(extra="forbid")

    email: MailboxField
    data: dict[str, Any] = Field(default_factory=dict)


def _addressee(value: Any) -> Mailbox | RecipientEntry:
    """An address string, or ``{"email", "data"}``; errors name the list entry, as for a plain address."""
    if not isinstance(value, dict):
        return mailbox_value(value)
    unknown = sorted(set(value) - {"email", "data"})
    if unknown:
        raise PydanticCustomError("extra_forbidden", "unknown field {name!r} in a recipient: give "
                                  "`email` and `data`", {"name": str(unknown[0])[:40]})
    if "email" not in value:
        raise PydanticCustomError("missing", "a recipient object needs `email`")
    data = value.get("data") or {}
    if not isinstance(data, dict):
        raise PydanticCustomError("dict_type", "a recipient's `data` must be an object")
    return RecipientEntry.model_construct(email=mailbox_value(value["email"]), data=data)


def _addressee_json(value: Mailbox | RecipientEntry) -> Any:
    if isinstance(value, RecipientEntry):
        return {"email": str(value.email), "data": value.data}
    return str(value)


Addressee = Annotated[Mailbox | RecipientEntry, PlainValidator(_addressee), PlainSerializer(_addressee_json),
                      WithJsonSchema({"anyOf": [
    {"type": "string", "examples": ["Jane Doe <jane@example.com>"]},
    {"type": "object", "properties": {"email": {"type": "string"}, "data": {"type": "object"}},
     "required": ["email"], "additionalProperties": False}]})]


def mailbox_of(entry: Mailbox | RecipientEntry) -> Mailbox:
    return entry.email if isinstance(entry, RecipientEntry) else entry


class SendRequest(BaseModel):
    """A message to build and send. At least one recipient (to/cc/bcc) and one of text/html."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [{
        "from": "Shop <shop@example.com>", "to": ["Jane Doe <jane@example.org>"], "subject": "Your order",
        "text": "Thanks for your order.", "html": "<style>p{color:#333}</style><p>Thanks for your order.</p>",
        "tags": ["orders"], "metadata": {"order": "1042"},
        "attachments": [{"filename": "order.txt", "content_type": "text/plain",
                         "content": "b3JkZXIgMTA0Mg=="}],
        "options": {"track_opens": True}}]})

    from_: MailboxField | None = Field(default=None, alias="from", description="Sender, `addr` or "
                                       "`Name <addr>`; required unless the `template` has one.")
    to: list[Addressee] = Field(default_factory=list, description="Addresses, or objects with a "
                                "recipient's own personalisation variables (`{\"email\", \"data\"}`).")
    cc: list[Addressee] = Field(default_factory=list)
    bcc: list[Addressee] = Field(default_factory=list,
                                 description="Envelope recipients that never appear in the headers.")
    reply_to: MailboxField | None = None
    subject: str = Field(default="", max_length=998)
    text: str | None = Field(default=None, description="Plain-text body.")
    html: str | None = Field(default=None, description="HTML body.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra header fields, e.g. "
                                    "`List-Unsubscribe`; those the gateway sets (From, To, …) are refused.")
    attachments: list[Attachment] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)],
                   Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=dict, max_length=50, description="Your key/value data, echoed in events.")
    options: SendOptions = Field(default_factory=SendOptions)
    stream: Literal["transactional", "bulk"] | None = Field(
        default=None, description="The message's lane (docs/delivery.md): `transactional` mail never waits "
        "behind `bulk`. Default: bulk for several recipients or a `List-Unsubscribe` header, else "
        "transactional.")
    unsubscribe: bool = Field(default=False, description="Add Postwire's one-click `List-Unsubscribe` "
                              "although the message is not bulk (bulk mail always gets it; "
                              "docs/unsubscribe.md).")
    list_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@+=-]{1,100}$")] | None = Field(
        default=None, examples=["news.example.com"], description="The mailing list the message belongs "
        "to: an unsubscribe then stops this list's bulk mail only. Default: the id of a `List-Id` header.")
    template: int | str | None = Field(default=None, description="A stored template (id or name) to build "
                                       "the message from; `from`, `subject`, `reply_to`, `text`, `html` "
                                       "and `headers` given beside it override its own (docs/templates.md).")
    data: dict[str, Any] | None = Field(default=None, description="Personalisation variables for every "
                                        "recipient (docs/personalisation.md); a recipient's own `data` "
                                        "is laid over them.")

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        return no_line_break(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        return check_custom_headers(v)

    @model_validator(mode="after")
    def _complete(self) -> SendRequest:
        if not (self.to or self.cc or self.bcc):
            raise PydanticCustomError("missing_recipients", "at least one recipient is required in "
                                      "`to`, `cc` or `bcc`")
        if self.template is None and self.from_ is None:
            raise PydanticCustomError("missing_from", "`from` is required (or a `template` that has one)")
        if self.template is None and self.text is None and self.html is None:
            raise PydanticCustomError("missing_body", "at least one of `text` or `html` is required")
        return self

    def envelope_recipients(self) -> list[str]:
        """to, cc then bcc, each address once (case-insensitively), in the order given."""
        seen: dict[str, str] = {}
        for m in (*self.to, *self.cc, *self.bcc):
            address = mailbox_of(m).address
            seen.setdefault(address.lower(), address)
        return list(seen.values())

    def personalised(self) -> bool:
        """A template, data, or a recipient with variables: rendered per recipient (docs/templates.md)."""
        return (self.template is not None or self.data is not None
                or any(isinstance(m, RecipientEntry) for m in (*self.to, *self.cc, *self.bcc)))

    def own_variables(self) -> dict[str, dict[str, Any]]:
        """Each recipient's own variables, by envelope address (the first entry of an address wins)."""
        found: dict[str, dict[str, Any]] = {}
        for m in (*self.to, *self.cc, *self.bcc):
            if isinstance(m, RecipientEntry):
                found.setdefault(m.email.address, m.data)
        return found


class QueuedRecipient(BaseModel):
    email: str
    status: Literal["queued"] = "queued"


class SendResponse(BaseModel):
    """The answer to an accepted message: it is durably queued (JetStream acknowledged it)."""

    id: str = Field(description="Message id; use it with GET /v1/messages/{id}.")
    recipients: list[QueuedRecipient]


class RecipientState(BaseModel):
    email: str
    status: str = Field(description="queued | deferred | delivered | failed")
    smtp_code: int | None = Field(default=None, description="Last SMTP reply code, e.g. 250 or 550.")
    enhanced_status: str | None = Field(default=None, description="RFC 3463 code, e.g. 5.1.1.")
    response: str | None = Field(default=None, description="The remote server's reply text.")
    mx_host: str | None = None
    attempts: int = 0
    updated_at: datetime


class MessageDetail(BaseModel):
    id: str
    from_: str = Field(serialization_alias="from")
    subject: str
    created_at: datetime
    tags: list[str]
    metadata: dict[str, str]
    recipients: list[RecipientState]


class ReadyStatus(BaseModel):
    ready: bool
    nats: bool
    database: bool
