"""The gRPC service over loopback: round trip, tracking, health, status codes, ops endpoint, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import grpc
import httpx
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from postwire.core import tracking
from postwire.transformer.service import SERVICE_NAME, Transformer, WorkerPool, serve
from postwire.transformer.settings import TransformerSettings
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

LIMIT = 256 * 1024
MESSAGE = (
    b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><style>p{color:red} @media (max-width:600px){p{color:blue}}</style></head>"
    b"<body><p>hi</p></body></html>\r\n"
)


@dataclass
class Running:
    grpc_port: int
    ops_port: int
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def transformer() -> AsyncIterator[Running]:
    settings = TransformerSettings(grpc_port=0, ops_port=0, transform_workers=1, max_message_size=LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    grpc_port: asyncio.Future[int] = loop.create_future()
    ops_port: asyncio.Future[int] = loop.create_future()
    task = asyncio.create_task(serve(settings, stop, grpc_port.set_result, ops_started=ops_port.set_result))
    running = Running(await grpc_port, await ops_port, stop, task)
    yield running
    stop.set()
    await task


@pytest_asyncio.fixture(loop_scope="session")
async def channel(transformer: Running) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{transformer.grpc_port}") as ch:
        yield ch


async def transform(
    channel: grpc.aio.Channel, mime: bytes, **options: object
) -> transformer_pb2.TransformResponse:
    stub = transformer_pb2_grpc.TransformerStub(channel)
    request = transformer_pb2.TransformRequest(mime=mime)
    if options:
        request.options.CopyFrom(transformer_pb2.TransformOptions(**options))  # type: ignore[arg-type]
    response: transformer_pb2.TransformResponse = await stub.Transform(request)
    return response


async def test_round_trip_inlines_css(channel: grpc.aio.Channel) -> None:
    reply = await transform(channel, MESSAGE, inline_css=True)
    assert reply.changed and reply.html_parts_transformed == 1
    assert b'<p style="color: red;">hi</p>' in reply.mime and b"@media" in reply.mime
    assert reply.mime.startswith(MESSAGE[: MESSAGE.index(b"\r\n\r\n")])


async def test_no_options_means_default_transforms(channel: grpc.aio.Channel) -> None:
    assert (await transform(channel, MESSAGE)).changed


async def test_premailer_by_request(channel: grpc.aio.Channel) -> None:
    reply = await transform(
        channel, MESSAGE, inline_css=True, css_engine=transformer_pb2.CSS_ENGINE_PREMAILER
    )
    assert reply.html_parts_transformed == 1 and b'style="color:red"' in reply.mime


async def test_inline_css_false_returns_the_message_unchanged(channel: grpc.aio.Channel) -> None:
    reply = await transform(channel, MESSAGE, inline_css=False)
    assert reply.mime == MESSAGE and not reply.changed


async def test_unparseable_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await transform(channel, b"this is not a message", inline_css=True)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a MIME message" in (info.value.details() or "")


async def test_too_large_is_resource_exhausted(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await transform(channel, MESSAGE + b"x" * LIMIT, inline_css=True)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_unknown_engine_value_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await transform(channel, MESSAGE, inline_css=True, css_engine=99)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_ops_endpoint_serves_metrics(transformer: Running, channel: grpc.aio.Channel) -> None:
    await transform(channel, MESSAGE, inline_css=True)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{transformer.ops_port}") as client:
        assert (await client.get("/readyz")).status_code == 200
        text = (await client.get("/metrics")).text
    assert 'postwire_transformer_requests_total{outcome="changed"}' in text
    assert "postwire_transformer_html_parts_transformed_total" in text


async def test_unexpected_failure_is_internal_with_a_safe_message() -> None:
    """A worker pool that is already shut down is a real failure the servicer did not anticipate."""
    settings = TransformerSettings(grpc_port=0, transform_workers=1)
    pool = WorkerPool(1)
    await pool.close()
    server = grpc.aio.server()
    transformer_pb2_grpc.add_TransformerServicer_to_server(Transformer(settings, pool), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await transform(ch, MESSAGE, inline_css=True)
    finally:
        await server.stop(grace=None)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error while transforming the message"


async def test_stop_drains_and_returns() -> None:
    stop = asyncio.Event()
    ports: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(TransformerSettings(grpc_port=0, transform_workers=1), stop, ports.set_result)
    )
    port = await ports
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert (await transform(ch, MESSAGE, inline_css=True)).changed
    stop.set()
    await task
    assert task.done() and task.exception() is None


NONCE = "00112233aabbccdd"
TRACKED = (
    b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee https://shop.example/?a=1&b=2\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><style>p{color:red}</style></head><body>"
    b'<p><a href="https://shop.example/?a=1&amp;b=2">Shop now</a> '
    b'<a href="https://bank.example/">https://bank.example/</a> <a href="mailto:c@example.com">c</a></p>'
    b"</body></html>\r\n--b--\r\n"
)
TRACKING = {
    "track_clicks": True,
    "track_opens": True,
    "prevent_scam": True,
    "click_url_prefix": "https://t.example.com/t/c/",
    "open_url_prefix": "https://t.example.com/t/o/",
    "nonce": NONCE,
}


async def test_tracking_round_trip(channel: grpc.aio.Channel) -> None:
    reply = await transform(channel, TRACKED, inline_css=True, **TRACKING)
    assert reply.changed and reply.html_parts_transformed == 1
    assert list(reply.links) == ["https://shop.example/?a=1&b=2"] and reply.open_pixel
    text_part = TRACKED[TRACKED.index(b"--b\r\n") : TRACKED.index(b"--b\r\nContent-Type: text/html")]
    assert text_part in reply.mime
    key = tracking.tracking_key(b"secret")
    group = "01JDQ3ZK4Q8Y5V7Q3M2W1X0ABC"
    sent = tracking.personalise(reply.mime, NONCE, lambda i: tracking.make_token(key, group, 0, i))
    msg = message_from_bytes(sent, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    html = str(part.get_content())
    assert '<p style="color: red;">' in html
    assert f'href="https://t.example.com/t/c/{tracking.make_token(key, group, 0, 0)}"' in html
    assert f'src="https://t.example.com/t/o/{tracking.make_token(key, group, 0, tracking.OPEN)}"' in html
    assert 'href="https://bank.example/"' in html and 'href="mailto:c@example.com"' in html


async def test_tracking_without_inlining(channel: grpc.aio.Channel) -> None:
    reply = await transform(channel, TRACKED, inline_css=False, **(TRACKING | {"track_opens": False}))
    assert reply.changed and list(reply.links) == ["https://shop.example/?a=1&b=2"] and not reply.open_pixel
    assert b"<style>p{color:red}</style>" in reply.mime and b"style=3D" not in reply.mime


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nonce": "not-a-nonce"}, "nonce"),
        ({"nonce": ""}, "nonce"),
        ({"click_url_prefix": "javascript:alert(1)//"}, "click_url_prefix"),
        ({"click_url_prefix": ""}, "click_url_prefix"),
        ({"track_clicks": False, "open_url_prefix": "t.example.com/t/o/"}, "open_url_prefix"),
    ],
)
async def test_bad_tracking_options_are_invalid_argument(
    channel: grpc.aio.Channel, change: dict[str, object], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await transform(channel, TRACKED, inline_css=True, **(TRACKING | change))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (info.value.details() or "")


async def test_prefixes_of_tracking_not_requested_are_not_checked(channel: grpc.aio.Channel) -> None:
    reply = await transform(
        channel,
        TRACKED,
        inline_css=False,
        nonce=NONCE,
        track_clicks=True,
        click_url_prefix="https://t.example.com/t/c/",
        open_url_prefix="bogus",
    )
    assert len(reply.links) == 2 and not reply.open_pixel  # no prevent_scam: the bank link too


async def test_stream_answers_each_request_with_its_own_status(channel: grpc.aio.Channel) -> None:
    stub = transformer_pb2_grpc.TransformerStub(channel)
    inline = transformer_pb2.TransformOptions(inline_css=True)
    requests = {
        1: transformer_pb2.TransformRequest(mime=MESSAGE, options=inline),
        2: transformer_pb2.TransformRequest(mime=b"no header block", options=inline),
        3: transformer_pb2.TransformRequest(mime=MESSAGE + b"x" * LIMIT, options=inline),
        4: transformer_pb2.TransformRequest(mime=MESSAGE, options=transformer_pb2.TransformOptions()),
    }
    items = [transformer_pb2.TransformStreamItem(id=i, request=r) for i, r in requests.items()]
    # the first two in one stream message, the others one each: a batch is answered like single requests
    call = stub.TransformStream(
        iter(
            [
                transformer_pb2.TransformStreamRequest(items=items[:2]),
                *(transformer_pb2.TransformStreamRequest(items=[item]) for item in items[2:]),
            ]
        )
    )
    answers = {a.id: a async for batch in call for a in batch.answers}
    assert sorted(answers) == [1, 2, 3, 4]
    assert await call.code() == grpc.StatusCode.OK
    assert answers[1].code == 0 and b'<p style="color: red;">hi</p>' in answers[1].response.mime
    assert (answers[2].code, answers[2].details) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "not a MIME message: no valid header block",
    )
    assert answers[3].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "the limit is" in answers[3].details and not answers[3].response.mime
    assert answers[4].code == 0 and answers[4].response.mime == MESSAGE and not answers[4].response.changed


async def test_stop_ends_an_open_stream_after_answering_what_it_read() -> None:
    stop = asyncio.Event()
    ports: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    settings = TransformerSettings(grpc_port=0, transform_workers=1, shutdown_grace_s=60)
    task = asyncio.create_task(serve(settings, stop, ports.set_result))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{await ports}") as ch:
        call = transformer_pb2_grpc.TransformerStub(ch).TransformStream()
        request = transformer_pb2.TransformRequest(mime=MESSAGE)
        item = transformer_pb2.TransformStreamItem(id=7, request=request)
        await call.write(transformer_pb2.TransformStreamRequest(items=[item]))
        (answer,) = (await call.read()).answers
        assert answer.id == 7 and answer.response.changed
        stop.set()  # the client never half-closes: the server ends the stream itself
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    await task
