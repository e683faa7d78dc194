"""A durable pull consumer whose request stays standing, topped up as capacity frees (nats.go's Consume).

nats-py's ``fetch`` asks anew for every batch: a ``no_wait`` probe, the server's "no messages" status,
a lingering request when nothing was there, each under its own timeout. At a moderate rate that is
three or four NATS messages and a timer per message delivered, in the service and in nats-server. A
standing request costs one message per delivery and one request per half batch.

:class:`StandingPull` speaks the protocol (JetStream's ``CONSUMER.MSG.NEXT`` requests and the status
messages that answer them) and counts what is still asked for; the caller decides how much to ask for.
The count must not drift, or the caller would hold capacity for messages that never come, so:

- a request that expires answers ``408`` with ``Nats-Pending-Messages``: what it will no longer deliver;
- a ``409`` without that header (leadership change, consumer deleted) ends every standing request;
- after a reconnect the server has forgotten the requests (their reply subscription went away with the
  connection), and if neither messages nor idle heartbeats come for two heartbeat periods, they are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import Header, StatusCode

log = structlog.get_logger(__name__)

# the header a pull request's 408/409 carries with what it leaves undelivered (nats-py names none)
PENDING_MESSAGES = "Nats-Pending-Messages"

Deliver = Callable[[Msg, bool], None]  # (message, whether a standing request was counted for it)


class StandingPull:
    """Pull requests of one durable consumer, answered on one inbox subscription of their own."""

    def __init__(self, js: JetStreamContext, stream: str, consumer: str, *, expires_s: float = 10.0,
                 heartbeat_s: float = 5.0) -> None:
        if not 0 < heartbeat_s < expires_s:
            raise ValueError("the idle heartbeat must come within the request's expiry")
        # nats-py keeps the connection and the API prefix (domain-aware) there, with no public accessor
        self._nc: Client = js._nc
        self._stream, self._consumer = stream, consumer
        self._next = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires_ns = int(expires_s * 1e9)
        self._heartbeat_s = heartbeat_s
        self._heartbeat_ns = int(heartbeat_s * 1e9)
        self._inbox = ""
        self._sub: Subscription | None = None
        self._deliver: Deliver | None = None
        self._reconnects = 0
        self.outstanding = 0  # asked for and neither delivered nor ended
        self.returned = 0  # ended undelivered since the caller last collected them (see take_returned)
        self.last_seen = time.monotonic()

    async def start(self, deliver: Deliver) -> None:
        """Subscribe the inbox; ``deliver`` is called for each message, in order, in the event loop."""
        self._deliver = deliver
        self._inbox = self._nc.new_inbox()
        self._reconnects = self._nc.stats["reconnects"]
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def ask(self, n: int) -> bool:
        """Ask for ``n`` more messages; False when the request could not be sent (not connected)."""
        payload = json.dumps({"batch": n, "expires": self._expires_ns,
                              "idle_heartbeat": self._heartbeat_ns}).encode()
        try:
            await self._nc.publish(self._next, payload, reply=self._inbox)
        except (nats.errors.Error, OSError) as e:
            log.debug("pull.ask_failed", stream=self._stream, consumer=self._consumer, error=str(e))
            return False
        if self.outstanding == 0:
            self.last_seen = time.monotonic()  # the heartbeat clock starts with the first standing request
        self.outstanding += n
        return True

    def check(self) -> None:
        """End the standing requests the server can no longer answer: all of them after a reconnect, or
        when nothing (not even an idle heartbeat) came for two heartbeat periods."""
        reconnects = self._nc.stats["reconnects"]
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self._end_all("reconnected")
        elif self.outstanding and time.monotonic() - self.last_seen > 2 * self._heartbeat_s:
            self._end_all("no heartbeat")

    def take_returned(self) -> int:
        """How many asked-for messages ended undelivered since the last call (capacity to give back)."""
        n, self.returned = self.returned, 0
        return n

    async def close(self) -> None:
        """Unsubscribe: the server drops requests whose reply subject lost its interest."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        self.last_seen = time.monotonic()
        headers = msg.headers or {}
        status = headers.get(Header.STATUS)
        if status is None:
            expected = self.outstanding > 0
            if expected:
                self.outstanding -= 1
            assert self._deliver is not None
            self._deliver(msg, expected)
        elif status in (StatusCode.REQUEST_TIMEOUT, StatusCode.CONFLICT):
            self._ended(headers, status)
        elif status not in (StatusCode.CONTROL_MESSAGE, StatusCode.NO_MESSAGES):
            log.warning("pull.status", stream=self._stream, consumer=self._consumer, status=status,
                        description=headers.get(Header.DESCRIPTION, ""))
            self._end_all(f"status {status}")

    def _ended(self, headers: dict[str, str], status: str) -> None:
        """A request ended: by expiry or a conflict that says how much it leaves undelivered, or a
        conflict that ends every request (leadership change, consumer deleted)."""
        left = headers.get(PENDING_MESSAGES)
        if left is None or not left.isdigit():
            log.info("pull.requests_ended", stream=self._stream, consumer=self._consumer, status=status,
                     description=headers.get(Header.DESCRIPTION, ""))
            self._end_all(f"status {status}")
            return
        n = min(int(left), self.outstanding)
        self.outstanding -= n
        self.returned += n

    def _end_all(self, why: str) -> None:
        if self.outstanding:
            log.debug("pull.requests_forgotten", stream=self._stream, consumer=self._consumer,
                      count=self.outstanding, why=why)
        self.returned += self.outstanding
        self.outstanding = 0


class BatchPull:
    """A durable consumer's messages in batches, for a reader that settles one batch before it takes the
    next (the event recorder, the webhook fan-out). Up to ``batch`` messages stand asked for or wait
    here; the request is topped up once half of it has come."""

    def __init__(self, js: JetStreamContext, stream: str, consumer: str, *, batch: int,
                 expires_s: float = 10.0, heartbeat_s: float = 5.0) -> None:
        self._pull = StandingPull(js, stream, consumer, expires_s=expires_s, heartbeat_s=heartbeat_s)
        self._batch = batch
        self._ready: list[Msg] = []
        self._arrived = asyncio.Event()

    async def start(self) -> None:
        await self._pull.start(self._on_delivered)

    async def next(self, timeout_s: float, linger_s: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages; [] when none came within ``timeout_s``. With ``linger_s``, a batch
        less than half full waits that long once for more, so a transaction carries many under load
        while at rest nothing waits longer than that."""
        await self._top_up()
        if not self._ready:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
        if self._ready and linger_s and len(self._ready) * 2 <= self._batch:
            await asyncio.sleep(linger_s)
        taken, self._ready = self._ready[:self._batch], self._ready[self._batch:]
        return taken

    async def close(self) -> None:
        await self._pull.close()

    async def _top_up(self) -> None:
        self._pull.check()
        self._pull.take_returned()  # nothing is held for this reader but what it has been given
        if self._pull.outstanding * 2 <= self._batch:
            room = self._batch - self._pull.outstanding - len(self._ready)
            if room > 0:
                await self._pull.ask(room)

    def _on_delivered(self, msg: Msg, counted: bool) -> None:
        self._ready.append(msg)
        self._arrived.set()
