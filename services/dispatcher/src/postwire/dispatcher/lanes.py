"""The weighted choice between the lanes (transactional, bulk) of what a router or sender takes next.

Each lane has its own consumers (postwire.core.topology); they draw the slots they ask JetStream with
(one per message asked for and not yet settled, ``worker.Slots``) from one :class:`WeightedSlots`. While
both lanes wait for slots, a freed slot goes to the lane that has had the least service for its weight
(stride scheduling): with weights 8:1, transactional gets eight slots for every one bulk gets, and bulk
always gets its ninth, so neither lane starves. A lane that does not wait takes nothing from the other:
when only one lane wants slots it gets all of them (work-conserving), and a lane coming back from idle
does not bring credit for the time it was idle, so it cannot then hold the other off for a while.

What waits beyond the slots waits in JetStream, per lane: a bulk backlog is messages on the bulk subject
that nobody has asked for yet, never a queue in front of a transactional message in this process.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping

from postwire.core.lanes import BULK, TRANSACTIONAL
from postwire.dispatcher import metrics

DEFAULT_WEIGHTS = {TRANSACTIONAL: 8, BULK: 1}


class WeightedSlots:
    """``size`` slots shared by named lanes; see the module's docstring for the choice."""

    def __init__(self, size: int, weights: Mapping[str, int] | None = None, *, stage: str = "") -> None:
        self._stage = stage  # named: the slots given are counted (metrics.LANE_SLOTS)
        self._free = size
        self._weights = dict(weights or DEFAULT_WEIGHTS)
        if any(w <= 0 for w in self._weights.values()):
            raise ValueError("lane weights must be positive")
        self._pass = dict.fromkeys(self._weights, 0.0)  # service received, in units of 1/weight
        self._clock = 0.0  # the pass of the lane served last: where a lane coming back from idle starts
        self._waiting: dict[str, deque[tuple[asyncio.Future[int], int]]] = {
            lane: deque() for lane in self._weights}
        self._held = dict.fromkeys(self._weights, 0)  # slots each lane holds now
        self.granted = dict.fromkeys(self._weights, 0)  # slots given to each lane so far (tests, metrics)

    @property
    def free(self) -> int:
        return self._free

    def lane(self, name: str) -> LaneSlots:
        """The slots as one lane sees them (the ``take``/``give`` of ``worker.Slots``)."""
        if name not in self._weights:
            raise KeyError(name)
        return LaneSlots(self, name)

    async def take(self, lane: str, most: int) -> int:
        """Wait for at least one slot, take up to ``most`` for ``lane``."""
        queue = self._waiting[lane]
        if not queue and not self._held[lane]:  # idle until now: no credit for the idle time
            self._pass[lane] = max(self._pass[lane], self._clock)
        if self._free > 0 and not any(self._waiting.values()):
            return self._grant(lane, most)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        queue.append((fut, most))
        self._dispatch()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give(lane, fut.result())  # granted as we were cancelled: hand it on
            raise

    def give(self, lane: str, n: int = 1) -> None:
        if n <= 0:
            return
        self._held[lane] -= n
        self._free += n
        self._dispatch()

    def _grant(self, lane: str, most: int) -> int:
        n = min(most, self._free)
        self._free -= n
        self._clock = self._pass[lane]
        self._pass[lane] += n / self._weights[lane]
        self._held[lane] += n
        self.granted[lane] += n
        if self._stage:
            metrics.LANE_SLOTS.labels(self._stage, lane).inc(n)
        return n

    def _dispatch(self) -> None:
        while self._free > 0:
            ready = [lane for lane, queue in self._waiting.items() if queue]
            if not ready:
                return
            lane = min(ready, key=lambda name: self._pass[name])  # ties: the first lane named (transactional)
            fut, most = self._waiting[lane].popleft()
            if fut.done():  # its taker was cancelled
                continue
            fut.set_result(self._grant(lane, most))


class LaneSlots:
    """One lane's view of :class:`WeightedSlots`, shaped like ``worker.Slots``."""

    def __init__(self, slots: WeightedSlots, lane: str) -> None:
        self._slots = slots
        self.name = lane

    async def take(self, most: int) -> int:
        return await self._slots.take(self.name, most)

    async def give(self, n: int = 1) -> None:
        self._slots.give(self.name, n)
