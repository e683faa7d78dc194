"""Per-recipient personalisation of tracked mail, in the sender, right before each attempt.

The router had the transformer inline the CSS and rewrite links once per message, leaving placeholders
(postwire.core.tracking). Here each recipient's copy gets its own signed tokens and, because that
changes the body, its DKIM signature: a signature made before the substitution would not verify.
Costs one regex pass and one signature per attempt (about 2.4 ms for RSA-2048 per 10 KB message).
"""

from __future__ import annotations

import functools

from postwire.core import tracking
from postwire.dispatcher.dkim import DKIM_SIGNED, DkimSigner
from postwire.v1 import envelope_pb2


class Personaliser:
    def __init__(self, key: bytes, signer: DkimSigner) -> None:
        self._key = key
        self._signer = signer

    async def prepare(self, out: envelope_pb2.OutboundMessage, raw: bytes) -> bytes:
        """``raw`` with this recipient's tokens, DKIM-signed when the account has a key for the From
        domain. Raises KeysUnavailable (the attempt waits) like the router's signing does."""
        t = out.tracking
        token_for = functools.partial(tracking.make_token, self._key, t.group_id, t.recipient_index)
        return await self.sign(out, tracking.personalise(raw, t.nonce, token_for))

    async def sign(self, out: envelope_pb2.OutboundMessage, data: bytes) -> bytes:
        """``data`` DKIM-signed when the account has a key for its From domain (a rendered personalised
        message, whose tokens the renderer already filled in)."""
        keys = await self._signer.keys_for(out.account_id)
        if not keys:
            return data
        signed = await self._signer.sign(data, keys)
        if signed is None:
            return data
        DKIM_SIGNED.labels(signed[1].algorithm).inc()
        return signed[0]
