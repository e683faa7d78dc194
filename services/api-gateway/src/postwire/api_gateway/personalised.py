"""Sends written in SMTPeter's personalisation language: a stored template and/or data (docs/templates.md).

A send is personalised when it names a ``template`` or carries ``data`` or per-recipient variables. The
gateway checks all that does not depend on a recipient (the template exists, every part compiles, the
parts without tags are valid) and queues ONE message whose body is a PersonalisedMessage: the parts, the
variables of every recipient and those of each one. The dispatcher inlines the CSS once, around the tags,
and the sender renders each recipient's copy (postwire.dispatcher.rendering); a render that fails for
one recipient (a limit, an address that does not parse once rendered) fails only that recipient, with
reason ``template``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from postwire.api_gateway.deps import Deps
from postwire.api_gateway.errors import InvalidInput
from postwire.api_gateway.templates import compile_part
from postwire.core.addresses import AddressError, has_line_break, parse_mailbox, split_address_list
from postwire.core.compose import Part
from postwire.core.sendoptions import PREFIXES
from postwire.db import templates as store
from postwire.personalisation import RenderError, TemplateSyntaxError, compile_template, has_tags
from postwire.v1 import envelope_pb2

# the parts a send may give beside a template (each overrides the template's), in the template's names
PARTS: Final = ("subject", "from", "replyto", "to", "cc", "html", "text")
# To when a personalised send names none: each recipient sees their own address, as with a batch send
DEFAULT_TO: Final = "{$recipient}"
_MAX_ID_DIGITS: Final = 18  # a BIGINT id; more digits cannot name a template


@dataclass(frozen=True)
class Content:
    """A message's parts as template sources; None: not given."""

    subject: str | None = None
    from_: str | None = None
    replyto: str | None = None
    to: str | None = None
    cc: str | None = None
    html: str | None = None
    text: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    attachments: Sequence[Part] = ()

    def parts(self) -> dict[str, str]:
        """Every given part by the name errors use (``headers.<name>`` for a header)."""
        found = {name: value for name, value in (
            ("subject", self.subject), ("from", self.from_), ("replyto", self.replyto), ("to", self.to),
            ("cc", self.cc), ("html", self.html), ("text", self.text)) if value is not None}
        return found | {f"headers.{name}": value for name, value in self.headers}


@dataclass(frozen=True)
class Source:
    """What the message is built from: a stored template's id and version (0, 0 for content written in
    the send itself) and the merged content."""

    content: Content
    template_id: int = 0
    version: int = 0


@dataclass(frozen=True)
class Variables:
    """The variables of every recipient and each one's own (by envelope address)."""

    shared: Mapping[str, Any] = field(default_factory=dict)
    own: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


async def source(deps: Deps, account_id: str, ref: str | int | None, given: Content,
                 loc: tuple[str, ...] = ("body", "template")) -> Source:
    """``given`` laid over the template ``ref`` names (its current version); 422 naming ``ref`` when the
    account has no such template."""
    if ref is None:
        return Source(given)
    saved = None
    text = str(ref).strip()
    if text and not (text.isascii() and text.isdigit() and len(text) > _MAX_ID_DIGITS):
        async with deps.sessions() as s:
            saved = await store.get(s, account_id, text)
    if saved is None:
        raise InvalidInput(loc, f"no template {text[:100]!r} in this account", "unknown_template")
    return Source(merge(saved.content, given), saved.id, saved.version)


def merge(stored: Mapping[str, Any], given: Content) -> Content:
    """The template's parts with those the send gives in their place; headers by name (the send's win,
    case-insensitively), attachments the send's."""
    headers = {k.lower(): (k, v) for k, v in (stored.get("headers") or {}).items()}
    headers |= {k.lower(): (k, v) for k, v in given.headers}
    return Content(
        subject=_first(given.subject, stored.get("subject")), from_=_first(given.from_, stored.get("from")),
        replyto=_first(given.replyto, stored.get("replyto")), to=given.to, cc=given.cc,
        html=_first(given.html, stored.get("html")), text=_first(given.text, stored.get("text")),
        headers=list(headers.values()), attachments=given.attachments)


def _first(*values: Any) -> str | None:
    return next((v for v in values if v is not None), None)


def check(content: Content, variables: Variables, loc: tuple[str, ...] = ("body",)) -> Content:
    """422 naming the part: a syntax error (with its line), a missing sender, a part without tags that
    is invalid as it stands, a NUL anywhere. Returns the content with To defaulted."""
    if content.from_ is None or not content.from_.strip():
        raise InvalidInput((*loc, "from"), "`from` is required: give it, or use a template that has one",
                           "missing_from")
    content = content if content.to is not None else replace(content, to=DEFAULT_TO)
    for part, text in content.parts().items():
        where = (*loc, *part.split(".", 1))
        if "\x00" in text:
            raise InvalidInput(where, f"{part}: NUL characters are not allowed", "nul_character")
        if has_tags(text):
            compile_part(part, text, loc)
        else:
            _check_plain(part, text, where)
    _check_data(variables.shared, (*loc, "data"))
    for address, own in variables.own.items():
        _check_data(own, (*loc, "recipients", address))
    return content


def _check_plain(part: str, text: str, where: tuple[str, ...]) -> None:
    """A part without tags is what every recipient gets: checked now, as the API checks a plain send."""
    try:
        if part == "from":
            parse_mailbox(text)
        elif part in ("to", "cc", "replyto"):
            for piece in split_address_list(text):
                parse_mailbox(piece)
    except AddressError as e:
        raise InvalidInput(where, f"{part}: {e}", "invalid_address") from None
    if (part == "subject" or part.startswith("headers.")) and has_line_break(text):
        raise InvalidInput(where, f"{part}: line breaks (CR/LF) are not allowed in header fields",
                           "header_injection")


def _check_data(value: Any, loc: tuple[str, ...]) -> None:
    """Variables end up in header fields and bodies: no NUL (RFC 5322), and valid UTF-8 throughout."""
    for text in _strings(value):
        if "\x00" in text:
            raise InvalidInput(loc, "NUL characters are not allowed in personalisation data", "nul_character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(loc, "a string holds an unpaired surrogate", "json_invalid") from None


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included (iteratively: the nesting may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def take_options(content: Content) -> tuple[Content, bytes]:
    """The content without its ``x-smtpeter-*`` / ``X-Postwire-*`` option headers, and those headers as
    a header block for postwire.api_gateway.accept.take_options (they set the send's options and never
    reach a recipient, as in a plain send)."""
    options = [(k, v) for k, v in content.headers if k.lower().startswith(PREFIXES)]
    if not options:
        return content, b""
    kept = [(k, v) for k, v in content.headers if not k.lower().startswith(PREFIXES)]
    block = "".join(f"{k}: {v}\r\n" for k, v in options).encode("utf-8") + b"\r\n"
    return replace(content, headers=kept), block


def envelope_sender(content: Content, variables: Variables, given: str | None) -> str:
    """The envelope sender: the one given, else the From address, rendered with the variables every
    recipient shares (the envelope is one for the whole message)."""
    if given:
        return given
    text = content.from_ or ""
    try:
        rendered = compile_template(text, part="from").render(
            {**variables.shared, "recipient": "", "envelope": ""}) if has_tags(text) else text
        return parse_mailbox(rendered).address
    except (TemplateSyntaxError, RenderError, AddressError) as e:
        raise InvalidInput(("body", "from"), f"from, rendered with `data`, gives no envelope sender ({e}); "
                           "give `envelope`, or a from that does not depend on the recipient",
                           "invalid_address") from None


def message(content: Content, variables: Variables, envelope: str, message_id_domain: str) -> bytes:
    """The PersonalisedMessage the dispatcher renders per recipient."""
    out = envelope_pb2.PersonalisedMessage(
        subject=content.subject or "", reply_to=content.replyto or "", to=content.to or "",
        cc=content.cc or "", data=_json(variables.shared), envelope=envelope,
        message_id_domain=message_id_domain)
    setattr(out, "from", content.from_ or "")
    if content.html is not None:
        out.html = content.html
    if content.text is not None:
        out.text = content.text
    out.headers.extend(envelope_pb2.HeaderField(name=k, value=v) for k, v in content.headers)
    out.attachments.extend(envelope_pb2.Attachment(filename=a.filename, content_type=a.content_type,
                                                   content=a.content) for a in content.attachments)
    for address, own in variables.own.items():
        if own:
            out.recipient_data[address] = _json(own)
    return out.SerializeToString()


def personalisation(src: Source) -> envelope_pb2.Personalisation:
    return envelope_pb2.Personalisation(template_id=src.template_id, template_version=src.version)


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") if value else b""
