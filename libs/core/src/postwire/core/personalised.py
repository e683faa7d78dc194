"""A personalised message (docs/templates.md) rendered for one recipient: the parts of a
:class:`PersonalisedMessage` compiled once, then rendered with a recipient's variables into the fields of
a message (:class:`~postwire.core.compose.Draft`).

Used by the dispatcher's sender before each attempt (postwire.dispatcher.rendering) and by the API's
archive calls, which show a recipient's copy (postwire.api_gateway.archived). A copy that cannot be built
(a limit of the language, an address that does not parse once rendered, a line break in a rendered
header) raises :class:`RenderFailed`, naming the part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postwire.core.addresses import AddressError, Mailbox, has_line_break, parse_mailbox, split_address_list
from postwire.core.compose import Draft, Part, build
from postwire.personalisation import RenderError, Template, TemplateSyntaxError, compile_template, has_tags
from postwire.v1 import envelope_pb2


class RenderFailed(Exception):
    """This recipient's message cannot be built: the text says which part and why."""


class _Part:
    """One part: compiled when it holds template syntax, else kept as the text it is."""

    __slots__ = ("name", "source", "template")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.template: Template | None = compile_template(source, part=name) if has_tags(source) else None

    def render(self, data: dict[str, Any]) -> str:
        if self.template is None:
            return self.source
        try:
            return self.template.render(data)
        except RenderError as e:
            raise RenderFailed(f"{self.name}: {e}") from None


@dataclass(frozen=True)
class Compiled:
    """A personalised message ready to render: its parts compiled, its shared variables parsed."""

    subject: _Part
    from_: _Part
    reply_to: _Part
    to: _Part
    cc: _Part
    headers: tuple[tuple[str, _Part], ...]
    html: _Part | None
    text: _Part | None
    attachments: tuple[Part, ...]
    data: dict[str, Any]
    envelope: str
    message_id_domain: str

    @classmethod
    def of(cls, content: envelope_pb2.PersonalisedMessage) -> Compiled:
        """Raises RenderFailed when a part does not compile (the gateway checked it, so only a message
        queued by something else could) or the shared data is not a JSON object."""
        try:
            return cls(
                subject=_Part("subject", content.subject), from_=_Part("from", getattr(content, "from")),
                reply_to=_Part("replyto", content.reply_to), to=_Part("to", content.to),
                cc=_Part("cc", content.cc),
                headers=tuple((h.name, _Part(f"headers.{h.name}", h.value)) for h in content.headers),
                html=_Part("html", content.html) if content.HasField("html") else None,
                text=_Part("text", content.text) if content.HasField("text") else None,
                attachments=tuple(Part(a.filename, a.content_type, a.content) for a in content.attachments),
                data=_object(content.data, "data"), envelope=content.envelope,
                message_id_domain=content.message_id_domain)
        except TemplateSyntaxError as e:
            raise RenderFailed(str(e)) from None

    def variables(self, recipient: str, own: bytes) -> dict[str, Any]:
        return variables(self.data, recipient, own, self.envelope)

    def mime(self, draft: Draft, message_id: str, at: datetime) -> bytes:
        """A rendered draft of this message as MIME, under ``message_id``."""
        return build(draft, message_id, self.message_id_domain or "postwire.local", at)

    def draft(self, data: dict[str, Any]) -> Draft:
        """Every part rendered: the message as fields, checked as the API checks a send's fields."""
        subject = _header_value("subject", self.subject.render(data))
        headers = [(name, _header_value(name, part.render(data))) for name, part in self.headers]
        html = self.html.render(data) if self.html is not None else None
        text = self.text.render(data) if self.text is not None else None
        return Draft(from_=_mailbox("from", self.from_.render(data)),
                     to=_mailboxes("to", self.to.render(data)), cc=_mailboxes("cc", self.cc.render(data)),
                     reply_to=_mailboxes("replyto", self.reply_to.render(data)), subject=subject,
                     text=text if text is not None or html is not None or self.attachments else "",
                     html=html, headers=headers, attachments=self.attachments)


def variables(shared: dict[str, Any], recipient: str, own: bytes, envelope: str) -> dict[str, Any]:
    """The message's variables, the recipient's laid over them, and the two that always exist."""
    data = {**shared, **_object(own, "recipient data")} if own else dict(shared)
    data["recipient"] = recipient
    data["envelope"] = envelope
    return data


def _object(raw: bytes, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise RenderFailed(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise RenderFailed(f"{what} is not a JSON object")
    return value


def _header_value(name: str, value: str) -> str:
    if has_line_break(value):
        raise RenderFailed(f"{name}: holds a line break after rendering")
    return value


def _mailbox(name: str, value: str) -> Mailbox:
    try:
        return parse_mailbox(value)
    except AddressError as e:
        raise RenderFailed(f"{name} after rendering: {e}") from None


def _mailboxes(name: str, value: str) -> list[Mailbox]:
    return [_mailbox(name, piece) for piece in split_address_list(value)]


def read(raw: bytes) -> Compiled:
    """A PersonalisedMessage's bytes, compiled; RenderFailed when they are not one."""
    try:
        content = envelope_pb2.PersonalisedMessage.FromString(raw)
    except Exception as e:  # DecodeError: not what the gateway stored
        raise RenderFailed(f"the personalised message cannot be read: {e}") from None
    return Compiled.of(content)


def mime_for(compiled: Compiled, recipient: str, own: bytes, message_id: str, at: datetime) -> bytes:
    """One recipient's copy as MIME (no tracking, not signed: what the archive shows)."""
    return compiled.mime(compiled.draft(compiled.variables(recipient, own)), message_id, at)


def subjects(content: envelope_pb2.PersonalisedMessage, recipients: list[str]) -> dict[str, str]:
    """Each recipient's subject as rendered (for the message log and events); the subject as written
    where it does not render (the recipient then fails at delivery, saying why)."""
    try:
        part = _Part("subject", content.subject)
        data = _object(content.data, "data")
    except (TemplateSyntaxError, RenderFailed):
        return dict.fromkeys(recipients, content.subject)
    if part.template is None:
        return dict.fromkeys(recipients, content.subject)
    out = {}
    for rcpt in recipients:
        try:
            own = content.recipient_data.get(rcpt, b"")
            out[rcpt] = part.render(variables(data, rcpt, own, content.envelope))
        except RenderFailed:
            out[rcpt] = content.subject
    return out
