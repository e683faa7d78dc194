"""TransformerClient over the transformer's TransformStream, against the real transformer on loopback.

Many messages share one stream and each gets its own answer; a refusal is that message's alone; a
transformer that stops ends the stream and the next message goes over a new one; a transformer that is
gone is "unavailable" (the router retries later); one without the stream gets unary calls.
"""

# uses postwire.transformer: the client's stream against the real gRPC server
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest

from postwire.dispatcher.transform import TransformerClient, TransformerUnavailable
from postwire.testing.ports import free_port
from postwire.transformer.service import serve
from postwire.transformer.settings import TransformerSettings
from postwire.v1 import transformer_pb2

INLINE = transformer_pb2.TransformOptions(inline_css=True)


def message(marker: str) -> bytes:
    return (b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n<style>p{color:red}</style>"
            + f"<p>{marker}</p>\r\n".encode())


@asynccontextmanager
async def transformer(port: int) -> AsyncIterator[asyncio.Event]:
    """The real transformer on ``port`` until the block ends (or the yielded event is set)."""
    stop = asyncio.Event()
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(TransformerSettings(grpc_port=port, transform_workers=1), stop,
                                     started.set_result))
    await started
    try:
        yield stop
    finally:
        stop.set()
        await task


@asynccontextmanager
async def connected(port: int, timeout_s: float = 30) -> AsyncIterator[TransformerClient]:
    """A TransformerClient for the transformer on ``port``, closed when the block ends."""
    client = TransformerClient(f"127.0.0.1:{port}", timeout_s=timeout_s)
    try:
        yield client
    finally:
        await client.close()


def inlined(marker: str) -> Callable[[transformer_pb2.TransformResponse | None], bool]:
    return lambda r: r is not None and f'<p style="color: red;">{marker}</p>'.encode() in r.mime


async def test_concurrent_messages_share_one_stream_and_get_their_own_answers() -> None:
    port = free_port()
    async with transformer(port), connected(port) as client:
        markers = [f"message {i}" for i in range(40)]
        results = await asyncio.gather(*(client.transform(message(m), INLINE) for m in markers),
                                       client.transform(b"no header block", INLINE))
        *answers, refused = results
        assert all(inlined(m)(r) for m, r in zip(markers, answers, strict=True))
        assert refused is None  # INVALID_ARGUMENT for that message only: sent as it is
        assert client._stream is not None and client._stream.open  # one stream, still open


async def test_a_transformer_that_stops_ends_the_stream_and_the_next_message_opens_a_new_one() -> None:
    port = free_port()
    async with connected(port) as client:
        async with transformer(port):
            assert inlined("before")(await client.transform(message("before"), INLINE))
            first = client._stream
        assert first is not None
        async with transformer(port):  # a new transformer on the same address (a restarted pod)
            assert inlined("after")(await client.transform(message("after"), INLINE))
            assert client._stream is not first


async def test_a_transformer_that_is_gone_is_unavailable() -> None:
    async with connected(free_port(), timeout_s=2) as client:
        with pytest.raises(TransformerUnavailable):
            await client.transform(message("nobody"), INLINE)


async def upper_case(request: transformer_pb2.TransformRequest,
                     context: grpc.aio.ServicerContext) -> transformer_pb2.TransformResponse:
    return transformer_pb2.TransformResponse(mime=request.mime.upper(), changed=True)


async def broken_stream(requests: AsyncIterator[transformer_pb2.TransformStreamRequest],
                        context: grpc.aio.ServicerContext,
                        ) -> AsyncIterator[transformer_pb2.TransformStreamResponse]:
    async for _ in requests:
        raise RuntimeError("the stream handler fails")  # the client sees UNKNOWN
        yield transformer_pb2.TransformStreamResponse()


@asynccontextmanager
async def upper_casing_transformer(
        stream: Callable[..., AsyncIterator[transformer_pb2.TransformStreamResponse]] | None = None,
) -> AsyncIterator[int]:
    """A Transformer server whose Transform upper-cases the message, with ``stream`` as its
    TransformStream handler (None: a server without the method, which gRPC answers UNIMPLEMENTED);
    yields its port."""
    handlers = {"Transform": grpc.unary_unary_rpc_method_handler(
        upper_case, request_deserializer=transformer_pb2.TransformRequest.FromString,
        response_serializer=transformer_pb2.TransformResponse.SerializeToString)}
    if stream is not None:
        handlers["TransformStream"] = grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=transformer_pb2.TransformStreamRequest.FromString,
            response_serializer=transformer_pb2.TransformStreamResponse.SerializeToString)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("postwire.v1.Transformer",
                                                                          handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=None)


async def test_a_transformer_without_the_stream_gets_unary_calls() -> None:
    """A transformer from before TransformStream: its server knows Transform only (upper-cases the
    message), so the stream is answered UNIMPLEMENTED by gRPC itself."""
    async with upper_casing_transformer() as port, connected(port, timeout_s=10) as client:
        for marker in ("one", "two"):
            result = await client.transform(message(marker), INLINE)
            assert result is not None and f"<P>{marker.upper()}</P>".encode() in result.mime


async def test_a_broken_stream_asks_for_the_message_alone_and_its_own_answer_counts() -> None:
    """A stream that fails with another status than unavailable (a transformer bug, INTERNAL from the
    gRPC core) says nothing of the message: it is asked for alone, and inlined, not sent as it was."""
    async with upper_casing_transformer(broken_stream) as port, connected(port, timeout_s=10) as client:
        result = await client.transform(message("alone"), INLINE)
        assert result is not None and b"<P>ALONE</P>" in result.mime
