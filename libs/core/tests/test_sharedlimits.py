"""Shared limits (postwire.core.sharedlimits) between two or three "replicas" (one LimitStore each, as
each process has one) on a real nats-server. Time is a shared fake clock: a step forward stands for
time passing, so nothing here sleeps or asserts on durations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client

from postwire.core import kvcas, sharedlimits
from postwire.core.jetstream import PipelinedJetStream, jetstream
from postwire.core.sharedlimits import LimitStore, SharedBuckets, SharedFailures, SharedSlots, kv_key
from postwire.core.topology import LIMITS, Topology
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


Replica = Callable[[], Awaitable[LimitStore]]


@pytest_asyncio.fixture
async def replica(nats_server: NatsServer, clock: Clock) -> AsyncIterator[Replica]:
    """A new replica: its own NATS connection and LimitStore, joined (as a service does at start)."""
    conns: list[Client] = []

    async def start() -> LimitStore:
        nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        conns.append(nc)
        js = jetstream(nc, timeout=5)
        await Topology().apply(js)
        store = LimitStore(js, nc, "test", clock=clock)
        await store.start()
        return store

    yield start
    for nc in conns:
        await nc.close()


async def revision(store: LimitStore, key: str) -> int:
    js: PipelinedJetStream = store._js
    return (await kvcas.read(js, LIMITS, key, 5))[1]


async def test_a_small_bucket_is_shared_exactly(replica: Replica, clock: Clock) -> None:
    """Burst 4 across two replicas: 4 requests in all, wherever they land, then both refuse."""
    a, b = await replica(), await replica()
    rate_a = SharedBuckets(a, "rate", [(0.001, 4)], clock=clock)
    rate_b = SharedBuckets(b, "rate", [(0.001, 4)], clock=clock)
    assert [await rate_a.take("acct", 1) for _ in range(3)] == [0, 0, 0]
    assert await rate_b.take("acct", 1) == 0
    wait_b, wait_a = await rate_b.take("acct", 1), await rate_a.take("acct", 1)
    assert wait_b > 0 and wait_a > 0  # a per-replica bucket would still have 1 and 3
    assert await rate_b.take("other", 1) == 0  # per key


async def test_a_lease_serves_requests_without_asking_the_store(replica: Replica, clock: Clock) -> None:
    a, b = await replica(), await replica()
    big_a = SharedBuckets(a, "big", [(0.001, 80)], clock=clock)
    big_b = SharedBuckets(b, "big", [(0.001, 80)], clock=clock)
    assert await big_a.take("k", 1) == 0  # 1 + a lease of 80/8 = 10
    written = await revision(a, kv_key("big", "k"))
    assert [await big_a.take("k", 1) for _ in range(5)] == [0] * 5
    assert await revision(a, kv_key("big", "k")) == written  # served from the lease: no write
    assert [await big_a.take("k", 1) for _ in range(4)] == [0] * 4  # below half: a leases more meanwhile
    lease = big_a._leases["k"]
    await eventually(lambda: lease.busy is None or lease.busy.done())
    held = lease.held[0]
    assert held > 1 and await revision(a, kv_key("big", "k")) > written
    # what a holds is not available to b until a gives it back (idle)
    assert await big_b.take("k", 70 - held) == 0
    assert await big_b.take("k", 1) > 0
    clock.now += sharedlimits.IDLE_S
    await a.sync(force=False)  # the loop's round: idle keys give back
    taken = 0
    while await big_b.take("k", 1) == 0:  # b's refusal is old: it asks again, and gets what a gave back
        taken += 1
    assert taken == held  # 10 used by a, 70 - held and then held by b: exactly the capacity, nothing twice


async def test_windows_are_charged_together(replica: Replica, clock: Clock) -> None:
    """Hourly 5 and daily 8, as the send quota: a take needs both, and a refusal takes nothing."""
    a, b = await replica(), await replica()
    quota_a = SharedBuckets(a, "q", [(5 / 3600, 5), (8 / 86400, 8)], clock=clock)
    quota_b = SharedBuckets(b, "q", [(5 / 3600, 5), (8 / 86400, 8)], clock=clock)
    assert await quota_a.take("acct", 3) == 0
    assert await quota_b.take("acct", 2) == 0
    hour = await quota_b.take("acct", 1)
    assert 0 < hour <= 3600 / 5  # one recipient's refill of the hour
    clock.now += 3600  # the hour refills, the day does not (8 - 5 left: 3)
    await a.sync(force=False)  # the loops' round: what the day leased beyond its need comes back
    await b.sync(force=False)
    assert await quota_a.take("acct", 3) == 0
    day = await quota_b.take("acct", 1)
    assert day > 3600  # now the day waits
    quota_a.give_back("acct", 3)  # the queue refused those three: they count for nothing ...
    await a.sync(force=True)  # ... and, given back to the store, are the other replica's to use
    clock.now += sharedlimits.REFUSED_S
    assert await quota_b.take("acct", 3) == 0


async def test_refused_attempts_count_when_asked_to(replica: Replica, clock: Clock) -> None:
    """The SMTP connection rate: a client that keeps trying stays refused, on every replica."""
    a, b = await replica(), await replica()
    conn_a = SharedBuckets(a, "conn", [(3 / 60, 3)], charge_refused=True, clock=clock)
    conn_b = SharedBuckets(b, "conn", [(3 / 60, 3)], charge_refused=True, clock=clock)
    assert [await conn_a.take("ip", 1) for _ in range(3)] == [0, 0, 0]
    for _ in range(3):
        assert await conn_a.take("ip", 1) > 0  # each refusal owes a token
    await a.sync(force=False)  # owed tokens are settled in the store
    clock.now += 40  # 2 tokens refilled: without the debt of 3, b would admit the client now
    assert await conn_b.take("ip", 1) > 0
    clock.now += 60
    assert await conn_b.take("ip", 1) == 0


async def test_slots_are_shared_and_a_dead_replicas_slots_come_free(replica: Replica, clock: Clock) -> None:
    a, b, c = await replica(), await replica(), await replica()
    await a.heartbeat()  # a reads the members: b and c are known
    open_a, open_b, open_c = (SharedSlots(s, "open", 3, clock=clock) for s in (a, b, c))
    assert await open_a.acquire("ip") and await open_b.acquire("ip") and await open_c.acquire("ip")
    assert not await open_a.acquire("ip") and not await open_b.acquire("ip")
    open_b.release("ip")
    clock.now += sharedlimits.IDLE_S
    await b.sync(force=False)  # b gives the idle slot back
    clock.now += sharedlimits.REFUSED_S
    assert await open_a.acquire("ip")
    assert open_a.open_count("ip") == 2 and open_b.open_count("ip") == 0
    # c dies holding a slot (no leave): once its membership has run out, its slot is free again
    assert not await open_a.acquire("ip")
    clock.now += sharedlimits.MEMBER_TTL_S + 1
    await a.heartbeat()  # the loops' beats
    await b.heartbeat()
    assert await open_a.acquire("ip")
    assert not await open_b.acquire("ip")


async def test_failures_lock_the_key_on_every_replica(replica: Replica, clock: Clock) -> None:
    a, b = await replica(), await replica()
    auth_a = SharedFailures(a, "auth", limit=3, window_s=600, lockout_s=900, clock=clock)
    auth_b = SharedFailures(b, "auth", limit=3, window_s=600, lockout_s=900, clock=clock)
    assert [await auth_a.failed("user"), await auth_b.failed("user")] == [False, False]
    assert await auth_a.failed("user")  # the third, wherever it came: locked
    assert auth_a.locked("user") and not auth_a.locked("someone")
    await eventually(lambda: auth_b.locked("user"))  # announced to b
    clock.now += 901
    assert not auth_a.locked("user") and not auth_b.locked("user")
    assert [await auth_a.failed("user"), await auth_b.failed("user")] == [False, False]
    clock.now += 601
    assert not await auth_b.failed("user")  # the two before expired with their window


async def test_unreachable_store_each_replica_enforces_its_share(replica: Replica, clock: Clock,
                                                                nats_server: NatsServer) -> None:
    """NATS gone: two replicas last seen, so each allows half of every limit on its own."""
    a, b = await replica(), await replica()
    await a.heartbeat()  # a joined first: it counts b at its next beat
    assert (a.replicas(), b.replicas()) == (2, 2)
    rate_a = SharedBuckets(a, "rate", [(0.001, 4)], clock=clock)
    open_a = SharedSlots(a, "open", 4, clock=clock)
    auth_a = SharedFailures(a, "auth", limit=4, window_s=600, lockout_s=600, clock=clock)
    await nats_server.stop()
    await eventually(lambda: not a.usable and not b.usable)
    assert [await rate_a.take("k", 1) for _ in range(3)] == [0, 0, pytest.approx(2000)]
    assert [await open_a.acquire("k") for _ in range(3)] == [True, True, False]
    assert [await auth_a.failed("k") for _ in range(2)] == [False, True]
    assert auth_a.locked("k")
