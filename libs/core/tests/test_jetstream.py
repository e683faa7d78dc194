"""PipelinedJetStream against a real nats-server: what it returns and raises is what nats-py's publish
returns and raises, so every caller's error handling holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import nats.errors
import nats.js.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js.api import Header, StreamConfig

from postwire.core.jetstream import PipelinedJetStream, jetstream
from postwire.testing.nats import NatsServer


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def js(nc: Client) -> PipelinedJetStream:
    js = jetstream(nc, timeout=2)
    await js.add_stream(StreamConfig(name="PIPE", subjects=["pipe.>"]))
    return js


async def test_publish_returns_the_stored_sequence_and_recognises_duplicates(js: PipelinedJetStream) -> None:
    first = await js.publish("pipe.a", b"one", headers={Header.MSG_ID: "m1"})
    again = await js.publish("pipe.a", b"one", headers={Header.MSG_ID: "m1"})
    second = await js.publish("pipe.b", b"two")
    assert (first.stream, first.seq, first.duplicate) == ("PIPE", 1, None)
    assert (again.seq, again.duplicate) == (1, True)
    assert second.seq == 2
    assert (await js.get_msg("PIPE", 2)).data == b"two"


async def test_a_batch_is_stored_in_order(js: PipelinedJetStream) -> None:
    acks = await js.publish_many([(f"pipe.{i}", str(i).encode(), None) for i in range(50)])
    assert [a.seq for a in acks] == list(range(1, 51))
    info = await js.stream_info("PIPE")
    assert info.state.messages == 50


async def test_no_stream_for_the_subject_raises_like_nats_py(js: PipelinedJetStream, nc: Client) -> None:
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish("nowhere.x", b"lost?")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await nc.jetstream().publish("nowhere.x", b"lost?")


async def test_a_refused_publish_raises_the_api_error(js: PipelinedJetStream) -> None:
    await js.publish("pipe.a", b"one")
    with pytest.raises(nats.js.errors.APIError) as refused:  # the stream's last sequence is 1, not 7
        await js.publish("pipe.a", b"two", headers={"Nats-Expected-Last-Sequence": "7"})
    assert refused.value.err_code == 10071
    assert (await js.stream_info("PIPE")).state.messages == 1


async def test_no_acknowledgement_is_a_timeout(js: PipelinedJetStream, nc: Client) -> None:
    """A subject that a plain subscriber listens on (no stream): nobody ever acknowledges."""
    await nc.subscribe("silent.x", cb=None)
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish("silent.x", b"into the void", timeout=0.3)
    assert await js.publish("pipe.after", b"still works")  # the reply subscription is intact

