"""What was submitted to INBOUND, read the way a sink reads mail: for tests of stages that submit mail
into the pipeline themselves (bounce forwarding), without a dispatcher delivering it."""

from __future__ import annotations

import asyncio
from types import TracebackType

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from postwire.core.bodies import BodyStore
from postwire.testing.smtp import Received
from postwire.v1 import envelope_pb2


class InboundWatch:
    """Every message in INBOUND under ``subject`` (default: all of it), in order, each taken off the
    queue; :meth:`wait_for` and :meth:`of_account` pick one account's."""

    def __init__(self, js: JetStreamContext, subject: str = "inbound.>") -> None:
        self._js = js
        self._subject = subject
        self._bodies = BodyStore(js, 0)
        self._sub: Subscription | None = None
        self.received: list[Received] = []
        self.envelopes: list[envelope_pb2.InboundMessage] = []
        self.arrived = asyncio.Condition()

    async def __aenter__(self) -> InboundWatch:
        # INBOUND is a work queue: a consumer of its own that reads everything there and acks it (so no
        # router may run on the same subjects meanwhile); tests pick their account's messages out
        self._sub = await self._js.subscribe(self._subject, cb=self._on_message,
                                             deliver_policy=DeliverPolicy.ALL)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        envelope = envelope_pb2.InboundMessage.FromString(msg.data)
        data = await self._bodies.get(envelope.body)
        async with self.arrived:
            self.envelopes.append(envelope)
            self.received.append(Received(envelope.mail_from, list(envelope.recipients), data))
            self.arrived.notify_all()

    def of_account(self, account_id: str) -> list[Received]:
        return [r for r, e in zip(self.received, self.envelopes, strict=True) if e.account_id == account_id]

    async def wait_for(self, count: int, account_id: str, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages of ``account_id`` were submitted (a test deadline, not a
        speed assertion); returns them."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.of_account(account_id)) >= count),
                                   timeout)
        return self.of_account(account_id)
