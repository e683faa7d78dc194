"""The SMTPeter-compatible request and answer shapes (POST /v1/send, /v1/resend, GET /v1/events/{kind}/…).

Field names and defaults are SMTPeter's (docs/smtpeter.md), so a client written against its documentation
works unchanged; the checks are Postwire's: every violation is a 422 naming its field, with the same
error ``type`` values as POST /v1/messages (``invalid_address``, ``header_injection``, …).

The same models validate JSON and form bodies (:mod:`postwire.api_gateway.formdata` nests a form first),
so values that a form can only give as strings (booleans, one-item lists) are accepted in both.
"""

from __future__ import annotations

import mimetypes
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    RootModel,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from postwire.api_gateway.personalised import Content, Variables
from postwire.api_gateway.schemas import (
    HEADER_NAME,
    Base64Content,
    MailboxField,
    content_type_value,
    datetime_in_range,
    mailbox_value,
    no_line_break,
)
from postwire.core.addresses import (
    AddressError,
    Mailbox,
    has_line_break,
    normalize_address,
    split_address_list,
)
from postwire.core.compose import Draft, Part
from postwire.core.ids import ALPHABET as ID_ALPHABET
from postwire.core.ids import derived_id
from postwire.db.models import Event
from postwire.v1 import envelope_pb2

MAX_TAGS: Final = 20
_TAG: Final = re.compile(r"^[^\s;]{1,100}$")  # as x-smtpeter-tags (postwire.core.sendoptions)
_DATETIME: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_URL: Final = re.compile(r"^https?://[^\s<>\"]+$", re.IGNORECASE)
_XTEXT_SAFE: Final = re.compile(r"^[!-~]{1,100}$")  # RFC 3461 ENVID: printable ASCII, at most 100
NOTIFY: Final = ("SUCCESS", "FAILURE", "DELAY")
TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"


def _as_list(value: Any) -> Any:
    """A form gives a one-item list as a plain string; JSON clients sometimes do too."""
    return [value] if isinstance(value, str) else value


def _address(value: str) -> str:
    try:
        return normalize_address(value)
    except AddressError as e:
        kind = "header_injection" if "line breaks" in str(e) else "invalid_address"
        raise PydanticCustomError(kind, str(e)) from None


def _mailbox_list(value: Any) -> list[Mailbox]:
    """A string or a list of strings, each an address list (``a@x, "B" <b@y>``), as SMTPeter reads
    from, to, cc and replyto."""
    items = _as_list(value)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise PydanticCustomError("string_type", "must be an address string or a list of them")
    out: list[Mailbox] = []
    for item in items:
        for piece in split_address_list(item):
            out.append(mailbox_value(piece))
    return out


OneOrMany = Annotated[list[str], BeforeValidator(_as_list), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]
RecipientVariables = dict[str, dict[str, Any] | None]
Recipients = Annotated[list[str] | RecipientVariables, BeforeValidator(_as_list), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
               {"type": "object", "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                "description": "Each recipient's own personalisation variables, by address."}]})]


def _joined(value: Any) -> Any:
    """An address list given as a list of strings, as one string (a template renders it as a whole)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return value


AddressText = Annotated[str | None, BeforeValidator(_joined), WithJsonSchema(
    {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]
MailboxList = Annotated[
    list[Mailbox], PlainValidator(_mailbox_list), PlainSerializer(lambda v: [str(m) for m in v]),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                    "description": "An address list (`a@example.com, \"B\" <b@example.com>`) or a list "
                                   "of them."})]


def parse_utc(value: str, field: str, date_only_ok: bool = False) -> datetime:
    """``YYYY-MM-DD hh:mm:ss`` (or with ``T``), or with ``date_only_ok`` a bare ``YYYY-MM-DD``; UTC."""
    v = value.strip()
    parsed = None
    try:
        if _DATETIME.match(v):
            parsed = datetime.strptime(v.replace("T", " "), TIME_FORMAT)
        elif date_only_ok and _DATE.match(v):
            parsed = datetime.strptime(v, "%Y-%m-%d")
    except ValueError:
        pass
    if parsed is not None:  # within 1970..9000: a month's arithmetic on it must not overflow (fuzzer)
        return datetime_in_range(parsed.replace(tzinfo=UTC))
    shape = "\"YYYY-MM-DD\" or \"YYYY-MM-DD hh:mm:ss\"" if date_only_ok else "\"YYYY-MM-DD hh:mm:ss\""
    raise PydanticCustomError("invalid_datetime", "{field} must be a UTC time like {shape}",
                              {"field": field, "shape": shape})


def format_utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime(TIME_FORMAT)


# ---------------------------------------------------------------------------------------------- send


class SmtpeterDsn(BaseModel):
    """RFC 3461 DSN parameters. `notify`: `NEVER`, or any of `SUCCESS`, `FAILURE`, `DELAY` (a comma
    list or an array; unset means FAILURE); `ret`: `FULL` or `HDRS`; `envid`; `orcpt` (the original
    recipient, `addr` or `rfc822;addr`)."""

    model_config = ConfigDict(extra="forbid")

    notify: Annotated[list[str], WithJsonSchema(
        {"anyOf": [{"type": "string", "examples": ["FAILURE,DELAY"]},
                   {"type": "array", "items": {"type": "string", "enum": ["NEVER", *NOTIFY]}}]})] = \
        Field(default_factory=list)
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = Field(default=None, description="Printable ASCII, at most 100 characters.")
    orcpt: str | None = None

    @field_validator("notify", mode="before")
    @classmethod
    def _notify(cls, v: Any) -> Any:
        items = _as_list(v)
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return v
        values = [p.strip().upper() for i in items for p in i.split(",") if p.strip()]
        bad = [x for x in values if x not in ("NEVER", *NOTIFY)]
        if bad:
            raise PydanticCustomError("invalid_notify", "notify must be NEVER or any of SUCCESS, FAILURE, "
                                      "DELAY; got '{bad}'", {"bad": bad[0][:20]})
        if "NEVER" in values and len(set(values)) > 1:
            raise PydanticCustomError("invalid_notify", "NEVER cannot be combined with other values")
        return list(dict.fromkeys(values))

    @field_validator("ret", mode="before")
    @classmethod
    def _ret(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("envid")
    @classmethod
    def _envid(cls, v: str | None) -> str | None:
        if v is not None and not _XTEXT_SAFE.match(v):
            raise PydanticCustomError("invalid_envid", "envid must be 1-100 printable ASCII characters")
        return v

    @field_validator("orcpt")
    @classmethod
    def _orcpt(cls, v: str | None) -> str | None:
        if v is None:
            return None
        kind, sep, addr = v.partition(";")
        if not sep:
            return f"rfc822;{_address(v)}"
        if kind.strip().lower() != "rfc822":
            raise PydanticCustomError("invalid_orcpt", "orcpt must be an address or rfc822;address")
        return f"rfc822;{_address(addr)}"

    def envelope(self) -> envelope_pb2.Dsn | None:
        if not (self.ret or self.envid):
            return None
        return envelope_pb2.Dsn(ret=self.ret or "", envid=self.envid or "")

    def recipient(self) -> envelope_pb2.RecipientDsn | None:
        if not (self.notify or self.orcpt):
            return None
        return envelope_pb2.RecipientDsn(notify=self.notify, orcpt=self.orcpt or "")


class SmtpeterUnsubscribe(BaseModel):
    """`List-Unsubscribe` (RFC 2369): a mailto address and/or an http(s) URL; `oneclick` adds
    `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058; needs an https URL). SMTPeter's
    shorthands are accepted too: one string (address or URL) or a list of both."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    url: str | None = None
    oneclick: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        items = _as_list(data)
        if not isinstance(items, list):
            return data
        out: dict[str, Any] = {}
        for item in items:
            if not isinstance(item, str):
                raise PydanticCustomError("string_type", "unsubscribe entries must be strings")
            out["url" if _URL.match(item.strip()) else "email"] = item.strip()
        return out

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return None if v is None else _address(v.removeprefix("mailto:"))

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and (not _URL.match(v) or len(v) > 2000):
            raise PydanticCustomError("invalid_url", "url must be an http or https URL without spaces")
        return v

    @model_validator(mode="after")
    def _complete(self) -> SmtpeterUnsubscribe:
        if self.email is None and self.url is None:
            raise PydanticCustomError("missing_unsubscribe", "give an unsubscribe email and/or url")
        if self.oneclick and not (self.url or "").lower().startswith("https://"):
            raise PydanticCustomError("oneclick_needs_https", "oneclick (RFC 8058) needs an https url")
        return self

    def headers(self) -> list[tuple[str, str]]:
        links = [f"<mailto:{self.email}>"] if self.email else []
        links += [f"<{self.url}>"] if self.url else []
        out = [("List-Unsubscribe", ", ".join(links))]
        if self.oneclick:
            out.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return out


class SmtpeterAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Base64Content
    name: str = Field(default="attachment", min_length=1, max_length=255, examples=["invoice.pdf"])
    type: str | None = Field(default=None, examples=["application/pdf"],
                             description="Content type; guessed from `name` when omitted.")

    @model_validator(mode="before")
    @classmethod
    def _no_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            raise PydanticCustomError("unsupported", "attachments by url are not supported: send the file "
                                      "base64-encoded in `data`")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return no_line_break(v)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | None) -> str | None:
        return None if v is None else content_type_value(v)

    def part(self) -> Part:
        guessed = mimetypes.guess_type(self.name, strict=False)[0]
        return Part(self.name, self.type or guessed or "application/octet-stream", self.data)


def _shorthands(schema: dict[str, Any]) -> None:
    """`unsubscribe` also takes SMTPeter's shorthands: one string, or a list of an address and a URL."""
    schema.setdefault("anyOf", []).extend(
        [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 2}])


Tags = Annotated[list[str], BeforeValidator(_as_list), Field(max_length=MAX_TAGS), WithJsonSchema(
    {"type": "array", "items": {"type": "string", "pattern": r"^[^\s;]{1,100}$"}, "maxItems": MAX_TAGS})]


class SmtpeterSend(BaseModel):
    """POST /v1/send. `recipient` and/or `recipients` decide who gets the message (the address headers
    do not). The content is either `mime` (a whole RFC 5322 message) or the fields `from`, `to`, `cc`,
    `replyto`, `subject`, `text`, `html`, `unsubscribe`, `extra` and `attachments`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"recipient": "john@example.org", "from": "info@example.com", "to": "john@example.org",
         "subject": "This is the subject", "text": "This is example content", "tags": ["news"]},
        {"recipients": ["a@example.org", "b@example.org"],
         "mime": "From: info@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"}]})

    recipient: str | None = Field(default=None, description="One envelope recipient (a bare address).")
    recipients: Recipients = Field(default_factory=list, description="Envelope recipients: a list, or an "
                                   "object giving each one's own personalisation variables "
                                   "(`{\"a@example.org\": {\"name\": \"Ann\"}}`), laid over `data`.")
    template: int | str | None = Field(default=None, description="A stored template (id or name) to "
                                       "build the message from; fields given beside it override its own "
                                       "(docs/templates.md).")
    data: dict[str, Any] | None = Field(default=None, description="Personalisation variables for every "
                                        "recipient (docs/personalisation.md).")
    envelope: str | None = Field(default=None, description="The envelope sender (a bare address); "
                                 "default the From address. Given, bounces go to it: `trackbounces` then "
                                 "defaults to false.")
    dsn: SmtpeterDsn | None = None
    mime: str | None = Field(default=None, description="The whole message, headers and body.")
    from_: MailboxField | None = Field(default=None, alias="from", description="One address.")
    to: MailboxList = Field(default_factory=list)
    cc: MailboxList = Field(default_factory=list)
    replyto: MailboxList = Field(default_factory=list, validation_alias=AliasChoices("replyto", "replyTo"),
                                 description="Also taken as `replyTo`, as some client libraries send it.")
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = None
    html: str | None = None
    unsubscribe: SmtpeterUnsubscribe | None = Field(default=None, json_schema_extra=_shorthands)
    extra: dict[str, str] = Field(default_factory=dict, description="Custom header fields; names must "
                                  "start with `x-`.")
    attachments: list[SmtpeterAttachment] = Field(default_factory=list)
    inlinecss: bool = False
    trackclicks: bool = True
    trackopens: bool = False
    trackbounces: bool | None = Field(default=None, description="Default: true, or false when "
                                      "`envelope` is given.")
    preventscam: bool = False
    tags: Tags = Field(default_factory=list)
    maxdelivertime: Annotated[datetime | None, WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$",
                    "examples": ["2026-12-01 18:00:00"]}, {"type": "null"}]})] = Field(
        default=None, description="UTC, \"YYYY-MM-DD hh:mm:ss\": a recipient not delivered by then fails "
                                  "with reason `expired`. Unset: the default delivery window.")
    stream: Literal["transactional", "bulk"] | None = Field(
        default=None, description="The message's lane (docs/delivery.md): `transactional` mail never waits "
        "behind `bulk`. Default: bulk for several recipients or with `unsubscribe` (List-Unsubscribe), "
        "else transactional.")

    @field_validator("stream", mode="before")
    @classmethod
    def _empty_stream(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("recipient", "envelope", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("recipient", "envelope")
    @classmethod
    def _bare_address(cls, v: str | None) -> str | None:
        return None if v is None else _address(v)

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str] | RecipientVariables) -> list[str] | RecipientVariables:
        out: list[str] = []
        for i, addr in enumerate(v):
            try:
                out.append(normalize_address(addr))
            except AddressError as e:
                raise PydanticCustomError("invalid_address", "recipients[{i}]: {error}",
                                          {"i": i, "error": str(e)}) from None
        if isinstance(v, dict):
            return {new: v[old] for new, old in zip(out, v, strict=True)}
        return out

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str | None) -> str | None:
        return None if v is None else no_line_break(v)

    @field_validator("extra")
    @classmethod
    def _extra(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not name.lower().startswith("x-") or not HEADER_NAME.match(name):
                raise PydanticCustomError("invalid_header_name", "extra header '{name}': only x-* header "
                                          "names (printable ASCII, no spaces or ':') are allowed",
                                          {"name": name[:80]})
            if has_line_break(value):
                raise PydanticCustomError("header_injection", "extra header '{name}': line breaks (CR/LF) "
                                          "are not allowed in header fields", {"name": name})
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for i, tag in enumerate(v):
            if not _TAG.match(tag):
                raise PydanticCustomError("invalid_tag", "tags[{i}] '{tag}': tags are 1-100 characters "
                                          "without spaces or ';'", {"i": i, "tag": tag[:40]})
        return list(dict.fromkeys(v))

    @field_validator("maxdelivertime", mode="before")
    @classmethod
    def _maxdelivertime(cls, v: Any) -> Any:
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise PydanticCustomError("invalid_datetime", "maxdelivertime must be a string like "
                                      "\"YYYY-MM-DD hh:mm:ss\" (UTC)")
        return parse_utc(v, "maxdelivertime")

    @model_validator(mode="after")
    def _complete(self) -> SmtpeterSend:
        if not self.envelope_recipients():
            raise PydanticCustomError("missing_recipients", "give `recipient` or `recipients`: they decide "
                                      "who gets the message (to/cc are only headers)")
        if self.personalised():  # validated as SmtpeterPersonalSend: tags are allowed in its fields
            raise PydanticCustomError("personalised", "a personalised send (template, data or recipients "
                                      "with variables) is read by SmtpeterPersonalSend")
        fields = [n for n in ("from_", "to", "cc", "replyto", "subject", "text", "html", "unsubscribe",
                              "extra", "attachments") if getattr(self, n) not in (None, [], {})]
        if self.mime is not None:
            if fields:
                name = "from" if fields[0] == "from_" else fields[0]
                raise PydanticCustomError("conflicting_content", "give either `mime` or the message fields "
                                          "(`{name}` …), not both", {"name": name})
            return self
        if self.from_ is None:
            raise PydanticCustomError("missing_from", "`from` is required (or send the whole message in "
                                      "`mime`)")
        if self.text is None and self.html is None and not self.attachments:
            raise PydanticCustomError("missing_body", "at least one of `text`, `html` or `attachments` is "
                                      "required (or send the whole message in `mime`)")
        return self

    def envelope_recipients(self) -> list[str]:
        """`recipient` then `recipients`, each address once (case-insensitively)."""
        seen: dict[str, str] = {}
        for addr in ([self.recipient] if self.recipient else []) + list(self.recipients):
            seen.setdefault(addr.lower(), addr)
        return list(seen.values())

    def personalised(self) -> bool:
        return is_personalised(self.template, self.data, self.recipients)

    def track_bounces(self) -> bool:
        return self.trackbounces if self.trackbounces is not None else self.envelope is None

    def draft(self) -> Draft:
        assert self.from_ is not None  # checked by _complete in fields mode
        headers = self.unsubscribe.headers() if self.unsubscribe else []
        return Draft(from_=self.from_, to=self.to, cc=self.cc, reply_to=self.replyto,
                     subject=self.subject or "", text=self.text, html=self.html,
                     headers=headers + list(self.extra.items()),
                     attachments=[a.part() for a in self.attachments])


def is_personalised(template: Any, data: Any, recipients: Any) -> bool:
    """A send is personalised when it names a template, or carries data or per-recipient variables."""
    return template is not None or data is not None or isinstance(recipients, dict)


class SmtpeterPersonalSend(SmtpeterSend):
    """POST /v1/send with a template and/or personalisation data: the same fields, but `from`, `to`,
    `cc`, `replyto`, `subject` and `extra` are template text (checked once the template is known, and
    rendered per recipient: postwire.api_gateway.personalised)."""

    from_: str | None = Field(default=None, alias="from", max_length=4000)  # type: ignore[assignment]
    to: AddressText = None  # type: ignore[assignment]
    cc: AddressText = None  # type: ignore[assignment]
    replyto: AddressText = Field(default=None,  # type: ignore[assignment]
                                 validation_alias=AliasChoices("replyto", "replyTo"))

    @model_validator(mode="after")
    def _complete(self) -> SmtpeterPersonalSend:
        if not self.envelope_recipients():
            raise PydanticCustomError("missing_recipients", "give `recipient` or `recipients`: they decide "
                                      "who gets the message (to/cc are only headers)")
        if self.mime is not None:
            raise PydanticCustomError("conflicting_content", "`mime` cannot be personalised: give the "
                                      "message fields (or a template) with `data`")
        if self.template is None and self.text is None and self.html is None and not self.attachments:
            raise PydanticCustomError("missing_body", "at least one of `text`, `html` or `attachments` is "
                                      "required (or a `template`)")
        return self

    def content(self) -> Content:
        headers = self.unsubscribe.headers() if self.unsubscribe else []
        return Content(subject=self.subject, from_=self.from_, replyto=self.replyto, to=self.to, cc=self.cc,
                       html=self.html, text=self.text, headers=headers + list(self.extra.items()),
                       attachments=[a.part() for a in self.attachments])

    def variables(self) -> Variables:
        own = ({a: v or {} for a, v in self.recipients.items()} if isinstance(self.recipients, dict) else {})
        return Variables(shared=self.data or {}, own=own)


class SmtpeterResend(BaseModel):
    """POST /v1/resend."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=40, description="An id that /v1/send (or any send "
                         "route) returned.")


class SendAnswer(RootModel[dict[str, str]]):
    """One entry per recipient: `{"<message id>": "<recipient>"}`. Each id is that recipient's own."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"01jdr4v5x0c4bq5ptq3rvzy8nd": "john@example.com",
         "01jdr4v5x0h5r2kz6f1t9c2m7a": "jane@example.com"}]})


def recipient_ids(message_id: str, recipients: list[str]) -> dict[str, str]:
    """One id per recipient: the first recipient's is ``message_id`` itself, the others share its time
    part and take their random part from a digest of (``message_id``, index). Derived rather than drawn,
    so a retry that reuses the message id (Idempotency-Key takeover) hands out the same ids again."""
    out: dict[str, str] = {}
    for i, rcpt in enumerate(recipients):
        if i == 0:
            out[rcpt] = message_id
            continue
        out[rcpt] = derived_id(message_id, i)
    return out


def id_time(message_id: str) -> datetime | None:
    """When a Postwire id was made (its first 10 characters are milliseconds, Crockford base32)."""
    if len(message_id) != 26 or any(c not in ID_ALPHABET for c in message_id):
        return None
    ms = 0
    for c in message_id[:10]:
        ms = ms * 32 + ID_ALPHABET.index(c)
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        return None


# -------------------------------------------------------------------------------------------- events

# Postwire event type → SMTPeter event name. SMTPeter's "attempt" is its record of a message it took in
# (one per message and recipient, docs "attempts log files"), i.e. our "accepted"; a deferral has no
# SMTPeter counterpart and is not listed (GET /v1/events?type=deferred shows them).
EventName = Literal["attempt", "delivery", "failure", "bounce", "response", "open", "click"]
EVENT_NAMES: Final[dict[str, EventName]] = {
    "accepted": "attempt", "delivered": "delivery", "failed": "failure", "suppressed": "failure",
    "bounced": "bounce", "complained": "response", "opened": "open", "clicked": "click"}


class SmtpeterEvent(BaseModel):
    """One event as SMTPeter lists it. Its fields are in `data` (SMTPeter's documentation) and also at the
    top level of the object, where SMTPeter's client libraries read them: both kinds of reader work."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    event: EventName = Field(description="The SMTPeter event name.")
    type: EventName = Field(description="The same as `event` (SMTPeter's documentation calls it `type`).")
    id: str = Field(description="The recipient's message id (also in `data`, as every field below).")
    recipient: str
    time: str = Field(description="UTC, \"YYYY-MM-DD hh:mm:ss\".")
    tags: str = Field(description="';'-separated.")
    templateid: int | None = Field(description="The stored template the message was built from, on every "
                                               "event of the message; null when it was not built from one.")
    data: dict[str, Any] = Field(description="Always `id` (the recipient's message id), `recipient`, "
                                             "`time` (UTC, \"YYYY-MM-DD hh:mm:ss\"), `tags` (';'-separated), "
                                             "`templateid` (the stored template, or null); then by event: "
                                             "attempt `envelope`; delivery `attempt`, `code`, `status`, "
                                             "`response`, `mx`; failure the same plus "
                                             "`description`, `reason`, `hardbounce`, `suppressed`; bounce "
                                             "`code`, `status`, `response`, `description`, `reason`, "
                                             "`hardbounce`, `mta`; response `feedbacktype`, `mta`; open "
                                             "`ip`, `useragent`, `unique`; click `url`, `destination`, "
                                             "`linkindex`, `ip`, `useragent`, `unique`. The same fields "
                                             "are at the top level of the event.")


def smtpeter_event(row: Event, template_id: int | None = None) -> SmtpeterEvent | None:
    """``row`` in SMTPeter's shape, None for a type SMTPeter does not list. ``template_id`` is the stored
    template of the row's message (``postwire.db.events_query.template_ids``): only ``accepted`` events
    carry it themselves."""
    name = EVENT_NAMES.get(row.type)
    if name is None:
        return None
    d = row.data or {}
    data: dict[str, Any] = {"id": row.message_id, "recipient": row.recipient, "time": format_utc(row.at),
                            "tags": ";".join(d.get("tags") or []),
                            "templateid": template_id if template_id is not None else d.get("template_id")}
    smtp = {"code": d.get("smtp_code"), "status": d.get("enhanced_status"), "response": d.get("response")}
    if row.type == "accepted":
        data["envelope"] = d.get("mail_from")
    elif row.type == "delivered":
        data |= {"attempt": d.get("attempt", 0), **smtp, "mx": d.get("mx_host")}
    elif row.type in ("failed", "suppressed"):
        data |= {"attempt": d.get("attempt", 0), **smtp, "mx": d.get("mx_host"),
                 "description": d.get("response"), "reason": d.get("reason"),
                 "hardbounce": bool(d.get("hardbounce", False)), "suppressed": row.type == "suppressed"}
    elif row.type == "bounced":
        data |= {**smtp, "description": d.get("response"), "reason": d.get("reason"),
                 "hardbounce": bool(d.get("hardbounce", False)), "mta": d.get("remote_mta")}
    elif row.type == "complained":
        data |= {"feedbacktype": d.get("feedback_type"), "mta": d.get("remote_mta")}
    else:  # opened, clicked
        if row.type == "clicked":
            data |= {"url": d.get("url"), "destination": d.get("url"), "linkindex": d.get("link_index", 0)}
        data |= {"ip": d.get("client_ip"), "useragent": d.get("user_agent"),
                 "unique": bool(d.get("unique", False))}
    return SmtpeterEvent(event=name, type=name, data=data, **data)
