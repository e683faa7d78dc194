"""The pull loop's helpers against a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from postwire.core.pull import StandingPull
from postwire.core.topology import ensure_consumer, work_consumer
from postwire.dispatcher.worker import ByteBudget, Consumer, Heartbeats, Slots
from postwire.testing.fixtures import eventually

ACK_WAIT_S = 1.0


@pytest.mark.parametrize("beating", [True, False])
async def test_a_message_in_the_works_is_not_redelivered_while_heartbeats_run(js: JetStreamContext,
                                                                               beating: bool) -> None:
    """A transaction that outlasts ack_wait keeps its message when the heartbeat task runs; without it,
    JetStream hands the message out again (which would send the mail twice)."""
    stream = f"HB{int(beating)}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream.lower()}.>"]))
    await ensure_consumer(js, stream, work_consumer("worker", ack_wait_s=ACK_WAIT_S))
    sub = await js.pull_subscribe_bind(consumer="worker", stream=stream)
    await js.publish(f"{stream.lower()}.work", b"slow transaction")
    [msg] = await sub.fetch(1, timeout=5)
    heartbeats = Heartbeats(every_s=ACK_WAIT_S / 3)
    beat = asyncio.create_task(heartbeats.run()) if beating else None
    try:
        with heartbeats.keep_alive(msg):
            await asyncio.sleep(3 * ACK_WAIT_S)  # the remote MTA takes its time
        # the sentinel comes after the work: a redelivery of the first message would be handed out first
        await js.publish(f"{stream.lower()}.work", b"sentinel")
        [nxt] = await sub.fetch(1, timeout=5)
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
    assert (nxt.data == b"sentinel") is beating


async def test_the_body_budget_bounds_what_is_held_and_lets_any_size_through() -> None:
    """Senders hold object-store bodies under a byte budget: however many want room at once, what is
    held stays within the limit, and a body larger than the whole budget still goes (alone)."""
    budget = ByteBudget(100)
    held, peak, sizes_held = 0, 0, []

    async def sender(size: int) -> None:
        nonlocal held, peak
        async with budget.hold(size):
            held += min(size, 100)
            peak = max(peak, held)
            sizes_held.append((size, held))
            await asyncio.sleep(0.01)  # the SMTP transaction
            held -= min(size, 100)

    await asyncio.gather(*(sender(s) for s in [40, 40, 40, 250, 10, 60, 0, 30]))
    assert peak <= 100
    assert (250, 100) in sizes_held  # the oversized one held the whole budget, alone
    assert len(sizes_held) == 8


async def test_the_pull_loop_holds_no_more_than_its_slots_and_handles_each_message_once(
        js: JetStreamContext) -> None:
    """A backlog larger than the slots: never more messages in the works (or delivered and waiting)
    than slots, every message handled once and acknowledged, and on stop the loop ends cleanly."""
    await js.add_stream(StreamConfig(name="SLOTS", subjects=["slots.>"]))
    await ensure_consumer(js, "SLOTS", work_consumer("worker", ack_wait_s=30))
    for i in range(40):
        await js.publish("slots.work", str(i).encode())
    handled: list[int] = []
    busy, peak = 0, 0

    async def handler(msg: Msg) -> None:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await asyncio.sleep(0.01)
        handled.append(int(msg.data))
        busy -= 1
        await msg.ack()

    slots = Slots(4)
    consumer = Consumer(StandingPull(js, "SLOTS", "worker"), handler, slots, stage="router", batch=8)
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop, grace_s=5))
    await eventually(lambda: len(handled) == 40, timeout=20)
    stop.set()
    await running
    await consumer.close()
    assert sorted(handled) == list(range(40))
    assert peak <= 4
    info = await js.consumer_info("SLOTS", "worker")
    assert info.num_ack_pending == 0 and info.num_pending == 0
