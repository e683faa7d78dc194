"""The pull loop shared by router and sender: ask only for what there is capacity for, handle each
message in its own task, and on shutdown finish in-flight work or nak it.

Capacity is asked-for-but-unsettled messages, not just running handlers: a message delivered without
a free slot would sit in memory with its ack_wait running. An idle consumer asks for a single message,
so idle shards hold one slot each instead of a whole batch while their request stands, and busy shards
get the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import structlog
from nats.aio.msg import Msg

from postwire.core import settle
from postwire.core.lifecycle import finish_or_cancel
from postwire.core.pull import StandingPull
from postwire.dispatcher import metrics

log = structlog.get_logger(__name__)

Handler = Callable[[Msg], Awaitable[None]]
# redelivery delay after a handler bug, so a poison message does not spin
BUG_RETRY_S = 30.0


class Slots:
    """A counting limit whose holders can take several units at once (a fetch batch)."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._changed = asyncio.Condition()

    async def take(self, most: int) -> int:
        """Wait for at least one free unit, take up to ``most``."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._free > 0)
            n = min(most, self._free)
            self._free -= n
            return n

    async def give(self, n: int = 1) -> None:
        if n <= 0:
            return
        async with self._changed:
            self._free += n
            self._changed.notify_all()


class SlotSource(Protocol):
    """What a consumer takes its slots from: :class:`Slots`, or one lane of ``lanes.WeightedSlots``."""

    async def take(self, most: int) -> int: ...

    async def give(self, n: int = 1) -> None: ...


class Consumer:
    """Runs ``handler`` for each message of one durable pull consumer until ``stop``.

    The request stands (:class:`~postwire.core.pull.StandingPull`): each message asked for holds a slot
    from the moment it is asked for, so what the server sends always has room. An idle consumer asks
    for one message at a time; once messages flow it keeps up to ``batch`` asked for and tops up at half.
    """

    def __init__(self, pull: StandingPull, handler: Handler, slots: SlotSource, *, stage: str, batch: int,
                 tick_s: float = 1.0) -> None:
        self._pull = pull
        self._handler = handler
        self._slots = slots
        self._stage = stage
        self._batch = batch
        self._tick = tick_s
        self._want = 1
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, stop: asyncio.Event, grace_s: float) -> None:
        await self._pull.start(self._deliver)
        stopped = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                self._pull.check()
                returned = self._pull.take_returned()
                if returned:  # a request ended unfilled: no longer busy, ask one at a time again
                    self._want = 1
                    await self._slots.give(returned)
                if self._pull.outstanding <= self._want // 2 and not await self._ask(stopped):
                    break
                await self._sleep(stopped)
        finally:
            self._stopping = True
            stopped.cancel()
            await self._drain(grace_s)

    async def _ask(self, stopped: asyncio.Task[bool]) -> bool:
        """Take slots for what should stand (waiting while all are busy) and ask for it; False on stop."""
        n = await self._take(self._want - self._pull.outstanding, stopped)
        if n == 0:
            return False
        if not await self._pull.ask(n):
            await self._slots.give(n)
            await asyncio.sleep(self._tick)  # not connected: the client is reconnecting
        return True

    async def _sleep(self, stopped: asyncio.Task[bool]) -> None:
        """Until a message or the end of a request changes what stands, a tick passes, or stop."""
        woken = asyncio.create_task(self._wake.wait())
        await asyncio.wait({woken, stopped}, timeout=self._tick, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        self._wake.clear()

    def _deliver(self, msg: Msg, counted: bool) -> None:
        """A message from the server: its slot was taken when it was asked for (``counted``); one that
        comes for a request given up as lost runs beyond the slots rather than waiting for ack_wait."""
        task: asyncio.Task[Any]
        if self._stopping:
            task = asyncio.create_task(settle.nak(msg))  # shutting down: straight back to the stream
        else:
            task = asyncio.create_task(self._handle(msg, counted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._want = self._batch
        if self._pull.outstanding <= self._want // 2:
            self._wake.set()

    async def _take(self, want: int, stopped: asyncio.Task[bool]) -> int:
        """Slots to ask with, or 0 when stop came first (all slots may be busy for a while); ``stopped``
        is run's one waiter on the stop event."""
        take = asyncio.create_task(self._slots.take(want))
        await asyncio.wait({take, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not take.done():
            take.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await take
        if take.cancelled():
            return 0
        n = take.result()
        if stopped.done():
            await self._slots.give(n)
            return 0
        return n

    async def _handle(self, msg: Msg, counted: bool) -> None:
        metrics.INFLIGHT.labels(self._stage).inc()
        try:
            await self._handler(msg)
        except asyncio.CancelledError:
            # shutdown ran out of grace: hand the message back now rather than after ack_wait
            await asyncio.shield(settle.give_back(msg))
            raise
        except Exception:
            log.exception("consumer.handler_failed", stage=self._stage)
            await settle.give_back(msg, delay=BUG_RETRY_S)
        finally:
            metrics.INFLIGHT.labels(self._stage).dec()
            if counted:
                await self._slots.give(1)

    async def close(self) -> None:
        """Drop the standing requests (the server forgets a request whose inbox has no subscriber)."""
        await self._pull.close()

    async def _drain(self, grace_s: float) -> None:
        """Let in-flight messages finish within the grace period; cancel (and so nak) the rest."""
        cancelled = await finish_or_cancel(self._tasks, grace_s)
        if cancelled:
            log.warning("consumer.nak_unfinished", stage=self._stage, count=len(cancelled))


class Heartbeats:
    """Tells JetStream that messages are still being worked on (``in_progress``), so a long SMTP
    transaction is not redelivered to someone else mid-flight.

    One task beats for every message, waking every half period; a message is told about once it has
    been in the works a whole period since its start or its last beat. A task per message would cost a
    task, a timer and a cancellation for every delivery, while nearly all of them end long before the
    first beat is due."""

    def __init__(self, every_s: float) -> None:
        self._every = every_s
        self._working: dict[int, tuple[Msg, float]] = {}  # id(msg) → (msg, last told); Msg is unhashable

    @contextlib.contextmanager
    def keep_alive(self, msg: Msg) -> Iterator[None]:
        self._working[id(msg)] = (msg, time.monotonic())
        try:
            yield
        finally:
            self._working.pop(id(msg), None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every / 2)
            now = time.monotonic()
            due = [msg for msg, told in self._working.values() if now - told >= self._every]
            for msg in due:
                if id(msg) in self._working:
                    self._working[id(msg)] = (msg, now)
                    await settle.in_progress(msg)


class ByteBudget:
    """At most ``limit`` bytes held at once by the holders of :meth:`hold`; a single holder asking for
    more than the whole limit waits until it is alone, so any size gets through and memory stays near
    the limit whatever the load."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        if size <= 0:
            yield
            return
        need = min(size, self._limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self._held + need <= self._limit)
            self._held += need
        try:
            yield
        finally:
            async with self._changed:
                self._held -= need
                self._changed.notify_all()
