"""The pull loop's helpers against a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from postwire.core.topology import ensure_consumer, work_consumer
from postwire.dispatcher.worker import ByteBudget, Heartbeats

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
