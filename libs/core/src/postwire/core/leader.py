"""A job one replica does for the whole system (reporting queue depth), whichever replicas run.

The holder is the key ``<job>`` of the KV bucket ``LEADERS``: ``{"h": holder, "u": until}``. Every
replica calls :meth:`LeaderLease.hold` once per round: the holder renews, the others find it taken until
it has not been renewed for ``ttl_s`` (the holder died), then one of them takes it over; the write names
the revision it read, so two replicas never both win. A holder that stops cleanly hands the job over at
once (:meth:`release`). NATS unreachable: nobody holds it (nothing to report without NATS anyway).
"""

from __future__ import annotations

import time

import structlog

from postwire.core import kvcas
from postwire.core.jetstream import PipelinedJetStream
from postwire.core.sharedlimits import Clock, replica_id
from postwire.core.topology import LEADERS

log = structlog.get_logger(__name__)


class LeaderLease:
    def __init__(self, js: PipelinedJetStream, job: str, ttl_s: float, *, holder: str | None = None,
                 clock: Clock = time.time, timeout_s: float = 2.0) -> None:
        self.job = job
        self.holder = holder or replica_id(clock())
        self._js = js
        self._ttl = ttl_s
        self._clock = clock
        self._timeout = timeout_s
        self.held = False

    async def hold(self) -> bool:
        """Take or renew the job; True while this replica holds it."""
        try:
            value, revision = await kvcas.read(self._js, LEADERS, self.job, self._timeout)
            now = self._clock()
            if value is not None and value.get("h") != self.holder and float(value.get("u", 0)) > now:
                held = False
            else:
                await kvcas.write(self._js, LEADERS, self.job, {"h": self.holder, "u": now + self._ttl},
                                  revision, self._timeout)
                held = True
        except kvcas.Conflict:
            held = False  # another replica took it between our read and write
        except kvcas.UNREACHABLE as e:
            log.debug("leader.unreachable", job=self.job, error=str(e) or type(e).__name__)
            held = False
        if held != self.held:
            log.info("leader.changed", job=self.job, holder=self.holder, held=held)
        self.held = held
        return held

    async def release(self) -> None:
        """Hand the job over now (shutdown) rather than after ``ttl_s``."""
        if not self.held:
            return
        self.held = False
        try:
            value, revision = await kvcas.read(self._js, LEADERS, self.job, self._timeout)
            if value is not None and value.get("h") == self.holder:
                await kvcas.write(self._js, LEADERS, self.job, {"h": self.holder, "u": 0}, revision,
                                  self._timeout)
        except (kvcas.Conflict, *kvcas.UNREACHABLE):
            pass  # taken over already, or it expires by itself
