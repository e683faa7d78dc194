"""Standing pull requests against a real nats-server: what is asked for arrives, nothing is lost when a
request ends or the server restarts, and the count of what stands does not drift."""

from __future__ import annotations

import nats
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from postwire.core.pull import BatchPull, StandingPull
from postwire.core.topology import ensure_consumer, work_consumer
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer


async def _stream(js: nats.js.JetStreamContext, name: str) -> None:
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    await ensure_consumer(js, name, work_consumer("worker", ack_wait_s=30))


async def test_a_standing_request_delivers_what_comes_later_and_gives_back_what_it_did_not(
        nats_server: NatsServer) -> None:
    """Messages published after the request arrive without asking again; when the request expires
    unfilled, the part not delivered is handed back (the caller's capacity for it is free again)."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await _stream(js, "PULLA")
    got: list[tuple[bytes, bool]] = []
    pull = StandingPull(js, "PULLA", "worker", expires_s=1.0, heartbeat_s=0.3)
    await pull.start(lambda msg, counted: got.append((msg.data, counted)))
    try:
        assert await pull.ask(5)
        for i in range(3):
            await js.publish("pulla.x", f"m{i}".encode())
        await eventually(lambda: len(got) == 3)
        assert got == [(b"m0", True), (b"m1", True), (b"m2", True)]
        assert pull.outstanding == 2
        await eventually(lambda: pull.outstanding == 0)  # expired
        assert pull.take_returned() == 2
        assert pull.take_returned() == 0
    finally:
        await pull.close()
        await nc.close()


async def test_after_a_server_restart_the_lost_requests_are_forgotten_and_nothing_is_lost(
        nats_server: NatsServer) -> None:
    """kill -9 of nats-server drops the standing request; the pull notices (the client reconnected),
    hands back what it held, and a new request gets the message published after the restart."""
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await _stream(js, "PULLB")
    got: list[Msg] = []
    pull = StandingPull(js, "PULLB", "worker", expires_s=30.0, heartbeat_s=5.0)
    await pull.start(lambda msg, counted: got.append(msg))
    try:
        assert await pull.ask(4)
        await nats_server.stop(kill=True)
        await nats_server.start()
        await eventually(lambda: nc.is_connected and nc.stats["reconnects"] > 0)
        pull.check()
        assert pull.outstanding == 0
        assert pull.take_returned() == 4
        await js.publish("pullb.x", b"after the restart")
        assert await pull.ask(1)
        await eventually(lambda: len(got) == 1)
        assert got[0].data == b"after the restart"
        await got[0].ack()
    finally:
        await pull.close()
        await nc.close()


async def test_batches_carry_what_arrived_and_an_idle_stream_answers_empty(nats_server: NatsServer) -> None:
    """The recorder's reader: a backlog comes in batches of at most ``batch``, in stream order, each
    message once; with nothing there, next() returns [] after its timeout instead of waiting on."""
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await _stream(js, "PULLC")
    for i in range(25):
        await js.publish("pullc.x", str(i).encode())
    pull = BatchPull(js, "PULLC", "worker", batch=10)
    await pull.start()
    seen: list[int] = []
    try:
        while len(seen) < 25:
            batch = await pull.next(timeout_s=5.0, linger_s=0.05)
            assert 0 < len(batch) <= 10
            for msg in batch:
                seen.append(int(msg.data))
                await msg.ack()
        assert seen == list(range(25))
        assert await pull.next(timeout_s=0.3) == []
        await js.publish("pullc.x", b"25")
        [late] = await pull.next(timeout_s=5.0)
        assert late.data == b"25"
    finally:
        await pull.close()
        await nc.close()
