"""Rendering a personalised message for one recipient, in the sender, right before each attempt.

A personalised message (docs/templates.md) travels as a :class:`PersonalisedMessage`: every part written
in SMTPeter's personalisation language, the variables of every recipient, and, in each OutboundMessage,
that recipient's own. The router had the CSS inlined once, around the template's tags. Here each part is
rendered with the recipient's variables laid over the message's (plus ``$recipient`` and ``$envelope``),
tracking placeholders get the recipient's tokens, and the MIME is built (postwire.core.compose); the
sender then DKIM-signs it. Compiling is done once per message and kept (:class:`CompiledCache`): a
10,000-recipient send compiles its template once per sender process, not per recipient.

A failed render (a limit reached, an address that does not parse after rendering, a line break in a
header) fails that recipient with reason ``template``; it is never retried, since the same data gives
the same result.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from postwire.core import tracking
from postwire.core.addresses import AddressError, Mailbox, has_line_break, parse_mailbox, split_address_list
from postwire.core.compose import Draft, Part, build
from postwire.personalisation import RenderError, Template, TemplateSyntaxError, compile_template, has_tags
from postwire.v1 import envelope_pb2

# the enhanced status of a recipient whose message could not be rendered (RFC 3463 5.6.x: media error)
RENDER_FAILED: Final = "5.6.0"
_CACHE_SIZE: Final = 64


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
        """The message's variables, the recipient's laid over them, and the two that always exist."""
        data = {**self.data, **_object(own, "recipient data")} if own else dict(self.data)
        data["recipient"] = recipient
        data["envelope"] = self.envelope
        return data

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


class CompiledCache:
    """Compiled messages by their body (LRU): the recipients of one message share one compilation."""

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, Compiled] = OrderedDict()
        self._lock = threading.Lock()  # renders run in threads

    @staticmethod
    def key(body: envelope_pb2.Body) -> bytes:
        if body.WhichOneof("location") == "object_name":
            return body.object_name.encode()
        return hashlib.blake2b(body.inline, digest_size=16).digest()

    def lookup(self, body: envelope_pb2.Body) -> Compiled | None:
        key = self.key(body)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def compile(self, body: envelope_pb2.Body, raw: bytes) -> Compiled:
        """``raw`` (the body's bytes) compiled and kept."""
        try:
            content = envelope_pb2.PersonalisedMessage.FromString(raw)
        except Exception as e:  # DecodeError: not what the router stored
            raise RenderFailed(f"the personalised message cannot be read: {e}") from None
        compiled = Compiled.of(content)  # outside the lock: two threads may compile it, one is kept
        with self._lock:
            self._entries[self.key(body)] = compiled
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return compiled


class Renderer:
    """Builds one recipient's MIME from a personalised message (CPU: a few tens of microseconds to
    render, the rest is building the MIME)."""

    def __init__(self, tracking_key: bytes, cache: CompiledCache | None = None) -> None:
        self._key = tracking_key
        self._cache = cache or CompiledCache()

    def lookup(self, body: envelope_pb2.Body) -> Compiled | None:
        """The body compiled already, if it is (then it need not be read)."""
        return self._cache.lookup(body)

    def render(self, out: envelope_pb2.OutboundMessage, compiled: Compiled | bytes) -> bytes:
        """The MIME for ``out.recipients[0]``, from the compiled message or the body's bytes; raises
        RenderFailed."""
        if not isinstance(compiled, Compiled):
            compiled = self._cache.compile(out.body, compiled)
        recipient = out.recipients[0]
        draft = compiled.draft(compiled.variables(recipient, out.personalised.data))
        if out.tracking.nonce and draft.html:
            draft = _tracked(draft, out.tracking, self._key)
        at = out.accepted_at.ToDatetime(UTC) if out.HasField("accepted_at") else datetime.now(UTC)
        return build(draft, out.message_id, compiled.message_id_domain or "postwire.local", at)


def _tracked(draft: Draft, t: envelope_pb2.Tracking, key: bytes) -> Draft:
    """The recipient's tokens in place of the placeholders, in the HTML before it is encoded (a
    placeholder split by a quoted-printable soft break would not be found in the MIME)."""
    html = tracking.personalise(draft.html.encode("utf-8") if draft.html else b"", t.nonce,
                                lambda link: tracking.make_token(key, t.group_id, t.recipient_index, link))
    return replace(draft, html=html.decode("utf-8"))
