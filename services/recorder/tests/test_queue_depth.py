"""The queue-depth sampler against a real NATS server."""

from __future__ import annotations

from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from postwire.core.topology import EVENTS, ensure_consumer, work_consumer
from postwire.recorder.queue_depth import sample


def _gauge(name: str, stream: str, consumer: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": stream, "consumer": consumer})


async def test_pending_and_in_flight_messages_are_summed_per_consumer_group(js: JetStreamContext) -> None:
    for shard in ("000", "001"):  # two consumers of one group, as shards or webhook endpoints are
        await ensure_consumer(js, EVENTS, work_consumer(f"grp-{shard}", filter_subject=f"events.{shard}.x"))
    for _ in range(3):
        await js.publish("events.000.x", b"1")
    await js.publish("events.001.x", b"1")
    sub = await js.pull_subscribe_bind(durable="grp-000", stream=EVENTS)
    [fetched] = await sub.fetch(1, timeout=5)  # one in flight, not acked
    await sample(js)
    assert _gauge("postwire_queue_pending_messages", EVENTS, "grp") == 3  # 2 + 1 not yet delivered
    assert _gauge("postwire_queue_ack_pending_messages", EVENTS, "grp") == 1
    await fetched.ack()
    await sample(js)
    assert _gauge("postwire_queue_ack_pending_messages", EVENTS, "grp") == 0
