"""The queue-depth sampler against a real NATS server."""

from __future__ import annotations

import nats
from nats.js import JetStreamContext
from prometheus_client import REGISTRY, CollectorRegistry

from postwire.core.jetstream import jetstream
from postwire.core.leader import LeaderLease
from postwire.core.topology import EVENTS, ensure_consumer, work_consumer
from postwire.recorder.queue_depth import JOB, QueueGauges, sample, sample_if_leader
from postwire.testing.nats import NatsServer


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


async def test_only_the_lease_holder_reports_and_another_takes_over(js: JetStreamContext,
                                                                    nats_server: NatsServer) -> None:
    """Two recorder replicas, each with its own /metrics (registry): the queue is exported by one."""
    await ensure_consumer(js, EVENTS, work_consumer("grp-000", filter_subject="events.000.x"))
    await js.publish("events.000.x", b"1")
    nc = await nats.connect(nats_server.url)
    try:
        pjs = jetstream(nc)
        registries = [CollectorRegistry() for _ in range(2)]
        replicas = [(LeaderLease(pjs, JOB, ttl_s=60), QueueGauges.on(r)) for r in registries]

        def exported() -> list[float | None]:
            labels = {"stream": EVENTS, "consumer": "grp"}
            return [r.get_sample_value("postwire_queue_pending_messages", labels) for r in registries]

        async def round_of_both() -> list[bool]:
            return [await sample_if_leader(pjs, lease, gauges) for lease, gauges in replicas]

        for _ in range(2):
            assert await round_of_both() == [True, False]
            assert exported() == [1, None]  # a sum over the pods counts it once
        await replicas[0][0].release()  # the holder stops (or dies: then after the lease's ttl) ...
        (lease0, gauges0), (lease1, gauges1) = replicas
        assert await sample_if_leader(pjs, lease1, gauges1)  # ... and the other takes over
        assert not await sample_if_leader(pjs, lease0, gauges0)
        assert exported() == [None, 1]  # the old holder exports nothing stale
    finally:
        await nc.close()
