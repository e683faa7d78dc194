"""Rendering a personalised message for one recipient, in the sender, right before each attempt.

A personalised message (docs/templates.md) travels as a :class:`PersonalisedMessage`: every part written
in SMTPeter's personalisation language, the variables of every recipient, and, in each OutboundMessage,
that recipient's own. The router had the CSS inlined once, around the template's tags. Here each part is
rendered with the recipient's variables laid over the message's (plus ``$recipient`` and ``$envelope``;
postwire.core.personalised), tracking placeholders get the recipient's tokens, and the MIME is built
(postwire.core.compose); the sender then DKIM-signs it. Compiling is done once per message and kept
(:class:`CompiledCache`): a 10,000-recipient send compiles its template once per sender process, not
per recipient.

A failed render (a limit reached, an address that does not parse after rendering, a line break in a
header) fails that recipient with reason ``template``; it is never retried, since the same data gives
the same result.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final

from postwire.core import tracking
from postwire.core.compose import Draft
from postwire.core.personalised import Compiled, RenderFailed, read
from postwire.v1 import envelope_pb2

__all__ = ["RENDER_FAILED", "CompiledCache", "RenderFailed", "Renderer"]

# the enhanced status of a recipient whose message could not be rendered (RFC 3463 5.6.x: media error)
RENDER_FAILED: Final = "5.6.0"
_CACHE_SIZE: Final = 64


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
        compiled = read(raw)  # outside the lock: two threads may compile it, one is kept
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
        return compiled.mime(draft, out.message_id, at)


def _tracked(draft: Draft, t: envelope_pb2.Tracking, key: bytes) -> Draft:
    """The recipient's tokens in place of the placeholders, in the HTML before it is encoded (a
    placeholder split by a quoted-printable soft break would not be found in the MIME)."""
    html = tracking.personalise(draft.html.encode("utf-8") if draft.html else b"", t.nonce,
                                lambda link: tracking.make_token(key, t.group_id, t.recipient_index, link))
    return replace(draft, html=html.decode("utf-8"))
