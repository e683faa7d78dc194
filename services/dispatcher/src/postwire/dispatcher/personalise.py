"""Per-recipient personalisation of tracked and bulk mail, in the sender, right before each attempt.

The router had the transformer inline the CSS and rewrite links once per message, leaving placeholders
(postwire.core.tracking). Here each recipient's copy gets its own signed tokens, and the header fields the
router left to the sender (``OutboundMessage.headers``: Feedback-ID, and the recipient's one-click
List-Unsubscribe, postwire.core.unsubscribe), and, because that changes the message, its DKIM
signature: a signature made before would not verify. Costs one regex pass and one signature per attempt
(about 2.4 ms for RSA-2048 per 10 KB message).
"""

from __future__ import annotations

import functools

from postwire.core import tracking, unsubscribe
from postwire.dispatcher.dkim import DKIM_SIGNED, DkimSigner
from postwire.v1 import envelope_pb2


class Personaliser:
    def __init__(self, key: bytes, signer: DkimSigner) -> None:
        self._key = key
        self._unsubscribe_key = unsubscribe.token_key(key)
        self._signer = signer

    async def prepare(self, out: envelope_pb2.OutboundMessage, raw: bytes) -> bytes:
        """``raw`` with this recipient's tokens, DKIM-signed when the account has a key for the From
        domain. Raises KeysUnavailable (the attempt waits) like the router's signing does."""
        t = out.tracking
        if t.nonce:
            token_for = functools.partial(tracking.make_token, self._key, t.group_id, t.recipient_index)
            raw = tracking.personalise(raw, t.nonce, token_for)
        return await self.sign(out, raw)

    def headed(self, out: envelope_pb2.OutboundMessage, data: bytes) -> bytes:
        """``data`` with the header fields ``out.headers`` asks for: Feedback-ID, and List-Unsubscribe
        with this recipient's token plus List-Unsubscribe-Post."""
        h = out.headers
        link = ""
        if h.unsubscribe_base and out.recipients:
            what = unsubscribe.Unsubscribe(out.account_id, out.message_id, out.recipients[0], h.list_id)
            link = unsubscribe.url(h.unsubscribe_base, unsubscribe.make_token(self._unsubscribe_key, what))
        return unsubscribe.add_headers(data, feedback=h.feedback_id, unsubscribe_url=link)

    async def sign(self, out: envelope_pb2.OutboundMessage, data: bytes) -> bytes:
        """``data`` with its header fields (:meth:`headed`), DKIM-signed when the account has a key for
        its From domain (a rendered personalised message, whose tokens the renderer already filled in)."""
        data = self.headed(out, data)
        keys = await self._signer.keys_for(out.account_id)
        if not keys:
            return data
        signed = await self._signer.sign(data, keys)
        if signed is None:
            return data
        DKIM_SIGNED.labels(signed[1].algorithm).inc()
        return signed[0]
