"""Queue depth of every JetStream consumer, exported by one process for the whole system.

Each stream's durable consumers are sampled periodically (consumer info) and summed per consumer group
(the name up to its first "-": router, sender, retry, recorder, webhooks, wh, whr), so the label set
stays bounded however many shards or webhook endpoints exist. The recorder role runs it: with several
recorder replicas, each reports the same values (use max() in queries).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import nats.errors
import structlog
from nats.js import JetStreamContext
from prometheus_client import Gauge

from postwire.core.topology import EVENTS, INBOUND, OUTBOUND, WEBHOOKS

log = structlog.get_logger(__name__)

STREAMS = (INBOUND, OUTBOUND, EVENTS, WEBHOOKS)

PENDING = Gauge("postwire_queue_pending_messages",
                "Messages not yet delivered to a consumer group of a stream (sampled).",
                ["stream", "consumer"])
ACK_PENDING = Gauge("postwire_queue_ack_pending_messages",
                    "Messages delivered to a consumer group and not yet acked: in flight, or waiting "
                    "for a scheduled retry (sampled).", ["stream", "consumer"])


def consumer_group(name: str) -> str:
    return name.split("-", 1)[0]


async def sample(js: JetStreamContext) -> None:
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
            PENDING.labels(stream, group).set(pending[group])
            ACK_PENDING.labels(stream, group).set(ack_pending[group])


async def run_sampler(js: JetStreamContext, interval_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await sample(js)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
