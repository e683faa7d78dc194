"""Leader leases (postwire.core.leader) between replicas on a real nats-server; a fake clock stands for
time passing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import nats
import pytest_asyncio

from postwire.core.jetstream import PipelinedJetStream, jetstream
from postwire.core.leader import LeaderLease
from postwire.core.topology import Topology
from postwire.testing.nats import NatsServer


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def pjs(nats_server: NatsServer) -> AsyncIterator[PipelinedJetStream]:
    nc = await nats.connect(nats_server.url)
    js = jetstream(nc)
    await Topology().apply(js)
    yield js
    await nc.close()


async def test_one_holder_at_a_time_and_handover(pjs: PipelinedJetStream) -> None:
    clock = Clock()
    a, b = (LeaderLease(pjs, "job", ttl_s=30, clock=clock) for _ in range(2))
    assert await a.hold() and not await b.hold()
    assert await a.hold() and not await b.hold()  # renewed
    await a.release()  # a clean stop hands over at once
    assert await b.hold() and not await a.hold()
    clock.now += 29
    assert not await a.hold()
    clock.now += 2  # b has not renewed for longer than the ttl: it is presumed dead
    assert await a.hold() and not await b.hold()
    other = LeaderLease(pjs, "another-job", ttl_s=30, clock=clock)
    assert await other.hold()  # one lease per job
