"""Queue depth of every JetStream consumer, exported by one process for the whole system.

Each stream's durable consumers are sampled periodically (consumer info) and summed per consumer group
(the name up to its first "-": router, sender, retry, recorder, webhooks, wh, whr), so the label set
stays bounded however many shards or webhook endpoints exist. The recorder role runs the sampler, and of
several recorder replicas only the one holding the ``queue-depth`` lease (postwire.core.leader) samples
and exports: a replica that loses the lease (or never had it) exports no queue series, so a sum over
the pods counts every queue once. A holder that dies is replaced after three sample intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass

import nats.errors
import structlog
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from postwire.core.leader import LeaderLease
from postwire.core.topology import EVENTS, INBOUND, OUTBOUND, WEBHOOKS

log = structlog.get_logger(__name__)

STREAMS = (INBOUND, OUTBOUND, EVENTS, WEBHOOKS)
JOB = "queue-depth"


@dataclass(frozen=True)
class QueueGauges:
    pending: Gauge
    ack_pending: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> QueueGauges:
        """The two gauges, registered with ``registry`` (tests give each replica its own)."""
        return cls(
            Gauge("postwire_queue_pending_messages",
                  "Messages not yet delivered to a consumer group of a stream (sampled by one replica).",
                  ["stream", "consumer"], registry=registry),
            Gauge("postwire_queue_ack_pending_messages",
                  "Messages delivered to a consumer group and not yet acked: in flight, or waiting for a "
                  "scheduled retry (sampled by one replica).", ["stream", "consumer"], registry=registry))

    def clear(self) -> None:
        self.pending.clear()
        self.ack_pending.clear()


GAUGES = QueueGauges.on(REGISTRY)


def consumer_group(name: str) -> str:
    return name.split("-", 1)[0]


async def sample(js: JetStreamContext, gauges: QueueGauges = GAUGES) -> None:
    """One sample of every stream's consumers into the gauges."""
    for stream in STREAMS:
        pending: dict[str, int] = defaultdict(int)
        ack_pending: dict[str, int] = defaultdict(int)
        try:
            consumers = await js.consumers_info(stream)
        except (nats.errors.Error, TimeoutError) as e:
            log.debug("queue_depth.unavailable", stream=stream, error=str(e) or type(e).__name__)
            continue
        for info in consumers:
            group = consumer_group(info.name)
            pending[group] += info.num_pending or 0
            ack_pending[group] += info.num_ack_pending or 0
        for group in pending:
            gauges.pending.labels(stream, group).set(pending[group])
            gauges.ack_pending.labels(stream, group).set(ack_pending[group])


async def sample_if_leader(js: JetStreamContext, lease: LeaderLease, gauges: QueueGauges = GAUGES) -> bool:
    """One round: sample while holding the lease; without it, export nothing (not even old values)."""
    if await lease.hold():
        await sample(js, gauges)
        return True
    gauges.clear()
    return False


async def run_sampler(js: JetStreamContext, lease: LeaderLease, interval_s: float, stop: asyncio.Event,
                      gauges: QueueGauges = GAUGES) -> None:
    try:
        while not stop.is_set():
            await sample_if_leader(js, lease, gauges)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        gauges.clear()
        await lease.release()
