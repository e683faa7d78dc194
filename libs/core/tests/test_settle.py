"""Settling against a real nats-server that goes away: a settle that cannot be sent returns False instead
of raising, and the message comes back after ack_wait, so nothing is lost and no loop ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from postwire.core import natsconn, settle
from postwire.core.topology import ensure_consumer, work_consumer
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer

ACK_WAIT_S = 1.0


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await natsconn.connect(nats_server.url, "test-settle")  # the services' options: pending_size=0
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def js(nc: Client) -> JetStreamContext:
    js = nc.jetstream(timeout=5)
    await js.add_stream(StreamConfig(name="SETTLE", subjects=["settle.>"]))
    await ensure_consumer(js, "SETTLE", work_consumer("worker", ack_wait_s=ACK_WAIT_S))
    return js


async def _next(js: JetStreamContext) -> Msg:
    sub = await js.pull_subscribe_bind(durable="worker", stream="SETTLE")
    try:
        [msg] = await sub.fetch(1, timeout=10)
    finally:
        await sub.unsubscribe()
    return msg


async def test_settles_that_cannot_be_sent_return_false_and_the_message_comes_back(
        nats_server: NatsServer, nc: Client, js: JetStreamContext) -> None:
    """The server dies with a message in hand: ack, nak, term and in_progress each return False at once
    (the client is reconnecting and buffers nothing) rather than raise; once the server is back the
    message is handed out again, and then it can be acked."""
    await js.publish("settle.a", b"one")
    msg = await _next(js)
    await nats_server.stop(kill=True)
    await eventually(lambda: not nc.is_connected)
    with pytest.raises(nats.errors.OutboundBufferLimitError):
        await msg.ack()  # what nats-py itself does: the error that ended the recorder
    assert await settle.ack(msg) is False
    assert await settle.nak(msg, delay=0.5) is False
    assert await settle.term(msg) is False
    assert await settle.in_progress(msg) is False
    assert await settle.give_back(msg) is False
    assert not msg.is_acked  # nothing was sent: it may still be settled later

    await nats_server.start()
    await eventually(lambda: nc.is_connected)
    again = await _next(js)  # after ack_wait
    assert again.data == b"one"
    assert await settle.ack(again) is True
    await eventually(lambda: _settled(js))


async def _settled(js: JetStreamContext) -> bool:
    info = await js.consumer_info("SETTLE", "worker")
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_settles_that_reach_the_server_do_what_they_say(js: JetStreamContext) -> None:
    """Connected, each helper sends its settle and returns True: a nak hands the message back, a term
    ends it, an ack removes it from the work queue."""
    await js.publish("settle.b", b"two")
    first = await _next(js)
    assert await settle.in_progress(first) is True
    assert await settle.nak(first) is True
    second = await _next(js)
    assert second.metadata.num_delivered == 2
    assert await settle.term(second) is True
    await eventually(lambda: _settled(js))
    await js.publish("settle.c", b"three")
    third = await _next(js)
    assert await settle.ack(third) is True
    await eventually(lambda: _settled(js))


async def test_misuse_still_raises_and_give_back_skips_a_settled_message(js: JetStreamContext) -> None:
    """A second ack is a bug and raises as in nats-py; give_back (the failure path) leaves a message
    that was settled already alone."""
    await js.publish("settle.d", b"four")
    msg = await _next(js)
    assert await settle.ack(msg) is True
    with pytest.raises(nats.errors.MsgAlreadyAckdError):
        await settle.ack(msg)
    assert await settle.give_back(msg) is False
