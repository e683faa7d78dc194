"""The gRPC Transformer service (grpc.aio) with the standard gRPC health service and an ops endpoint.

Inlining is CPU-bound and css-inline holds the GIL while it works (two threads run slower than one), so a
thread pool would stall the event loop, health checks included, for the length of each document. The work
therefore runs in a pool of worker *processes*: real parallelism across cores and a loop that stays
responsive. Copying a message to a worker costs about a memcpy; the workers are started once ("spawn",
because gRPC's threads do not survive a fork) and warmed up before the service reports SERVING.

Each message gets at most POSTWIRE_TRANSFORM_TIMEOUT_S in a worker; a worker that runs longer is killed
and replaced, and the call answers RESOURCE_EXHAUSTED, never DEADLINE_EXCEEDED: the dispatcher retries
DEADLINE_EXCEEDED later, which for a message that always takes too long would be forever, while on
RESOURCE_EXHAUSTED it sends the message as it is (:mod:`postwire.transformer.worker_pool`).

With POSTWIRE_GRPC_TLS_CERT_FILE/_KEY_FILE the gRPC port speaks TLS only; with
POSTWIRE_GRPC_TLS_CLIENT_CA_FILE as well it requires a client certificate signed by that CA (mTLS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from postwire.core.ops import ops_app, serve_app
from postwire.transformer import metrics
from postwire.transformer.html_parts import TransformResult
from postwire.transformer.inline import CSS_INLINE, PREMAILER
from postwire.transformer.link_tracking import BadTrackingOptions, TrackingOptions
from postwire.transformer.settings import TransformerSettings
from postwire.transformer.template_tags import BadTemplateOptions, TemplateOptions
from postwire.transformer.worker_pool import TransformFailed, WorkerPool
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

SERVICE_NAME: Final = transformer_pb2.DESCRIPTOR.services_by_name["Transformer"].full_name
MAX_GRPC_MESSAGE: Final = 64 * 1024 * 1024
STREAM_WINDOW_BYTES: Final = 8 * 1024 * 1024
# answers ready together go out as one stream message of about this much MIME at most (one answer of
# any size always goes): enough to share gRPC's cost per stream message, far below its 64 MB limit
BATCH_BYTES: Final = 1024 * 1024
_ENGINES: Final = {
    transformer_pb2.CSS_ENGINE_CSS_INLINE: CSS_INLINE,
    transformer_pb2.CSS_ENGINE_PREMAILER: PREMAILER,
}
_FAILURES: Final = {  # TransformFailed.kind → (metrics outcome, status code)
    "limit": ("limit", grpc.StatusCode.RESOURCE_EXHAUSTED),
    "invalid": ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
    "error": ("error", grpc.StatusCode.INTERNAL),
}

log = structlog.get_logger(__name__)

__all__ = ["SERVICE_NAME", "Transformer", "WorkerPool", "serve"]


class Transformer(transformer_pb2_grpc.TransformerServicer):
    """Transform: inline CSS in a message's HTML parts and add tracking; status codes as in the proto.
    TransformStream: the same for many messages over one stream, which ends when ``stop`` is set."""

    def __init__(
        self, settings: TransformerSettings, pool: WorkerPool, stop: asyncio.Event | None = None
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._stop = stop or asyncio.Event()

    async def Transform(
        self, request: transformer_pb2.TransformRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.TransformResponse:
        code, details, response = await self._answer(request)
        if response is None:  # set_code/set_details + an empty reply: the client sees only the status
            context.set_code(code)
            context.set_details(details)
            return transformer_pb2.TransformResponse()
        return response

    async def TransformStream(  # type: ignore[override]  # grpc.aio: a coroutine that writes via context
        self,
        request_iterator: AsyncIterator[transformer_pb2.TransformStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Answer each request as it completes (in any order; the answers ready together go out as one
        stream message) until the client half-closes or the server stops; then finish the requests
        already read and end the stream with OK. A request the client wrote after that gets no answer:
        the client sends it again on a new stream."""
        answers: asyncio.Queue[transformer_pb2.TransformStreamAnswer | None] = asyncio.Queue()
        writer = asyncio.create_task(_write_answers(answers, context))
        running: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read_requests(request_iterator, answers, running))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait((reader, stopping), return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
            if running:
                await asyncio.wait(set(running))
            answers.put_nowait(None)
            await writer
        finally:  # the client went away (cancelled): nothing is left to answer
            for task in (stopping, reader, writer, *running):
                task.cancel()

    async def _read_requests(
        self,
        request_iterator: AsyncIterator[transformer_pb2.TransformStreamRequest],
        answers: asyncio.Queue[transformer_pb2.TransformStreamAnswer | None],
        running: set[asyncio.Task[None]],
    ) -> None:
        async for batch in request_iterator:
            for item in batch.items:
                task = asyncio.create_task(self._answer_item(item, answers))
                running.add(task)
                task.add_done_callback(running.discard)

    async def _answer_item(
        self,
        item: transformer_pb2.TransformStreamItem,
        answers: asyncio.Queue[transformer_pb2.TransformStreamAnswer | None],
    ) -> None:
        code, details, response = await self._answer(item.request)
        answers.put_nowait(
            transformer_pb2.TransformStreamAnswer(
                id=item.id, code=code.value[0], details=details, response=response
            )
        )

    async def _answer(
        self, request: transformer_pb2.TransformRequest
    ) -> tuple[grpc.StatusCode, str, transformer_pb2.TransformResponse | None]:
        """(status code, details, response); the response is None unless the code is OK."""
        started = time.perf_counter()
        engine = _ENGINES.get(request.options.css_engine, self._settings.css_engine)
        metrics.BYTES.labels("in").inc(len(request.mime))
        outcome, code, details, result = await self._run(request, engine)
        metrics.REQUESTS.labels(outcome).inc()
        metrics.DURATION.labels(engine).observe(time.perf_counter() - started)
        if result is None:
            return code, details, None
        metrics.HTML_PARTS.labels(engine).inc(result.html_parts_transformed)
        if request.options.template:  # counted here: a worker's own counters are never scraped
            metrics.TEMPLATE_PARTS.labels("transformed").inc(result.html_parts_transformed)
            metrics.TEMPLATE_PARTS.labels("unprotectable").inc(result.unprotectable_parts)
        metrics.BYTES.labels("out").inc(len(result.mime))
        return (
            code,
            "",
            transformer_pb2.TransformResponse(
                mime=result.mime,
                html_parts_transformed=result.html_parts_transformed,
                changed=result.changed,
                links=result.links,
                open_pixel=result.open_pixel,
            ),
        )

    async def _run(
        self, request: transformer_pb2.TransformRequest, engine: str
    ) -> tuple[str, grpc.StatusCode, str, TransformResult | None]:
        """(outcome, status code, details, result); result is None when the call must fail."""
        ok = grpc.StatusCode.OK
        size, limit = len(request.mime), self._settings.max_message_size
        if size > limit:
            details = f"message is {size} bytes; the limit is {limit}"
            return "too_large", grpc.StatusCode.RESOURCE_EXHAUSTED, details, None
        if request.options.css_engine not in _ENGINES and request.options.css_engine != 0:
            return "invalid", grpc.StatusCode.INVALID_ARGUMENT, "unknown css_engine", None
        try:
            tracking = _tracking_options(request.options)
            template = _template_options(request.options)
        except (BadTrackingOptions, BadTemplateOptions) as exc:
            return "invalid", grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
        inline_css = request.options.inline_css or not request.HasField("options")
        if not inline_css and tracking is None:
            return "unchanged", ok, "", TransformResult(request.mime, 0, False)
        try:
            result = await self._pool.transform(
                request.mime, engine, inline_css=inline_css, tracking=tracking, template=template
            )
        except TransformFailed as exc:
            outcome, code = _FAILURES[exc.kind]
            log.warning("transform refused", outcome=outcome, reason=str(exc), size=size, engine=engine)
            return outcome, code, str(exc), None
        except Exception:
            log.exception("transform failed", size=size, engine=engine)
            return "error", grpc.StatusCode.INTERNAL, "internal error while transforming the message", None
        if len(result.mime) > limit:  # inlining can multiply a document (one rule, many elements)
            details = f"the transformed message would be {len(result.mime)} bytes; the limit is {limit}"
            return "too_large", grpc.StatusCode.RESOURCE_EXHAUSTED, details, None
        return ("changed" if result.changed else "unchanged"), ok, "", result


async def _write_answers(
    answers: asyncio.Queue[transformer_pb2.TransformStreamAnswer | None], context: grpc.aio.ServicerContext
) -> None:
    """The stream's only writer (gRPC allows one write at a time), until the None that ends it: the
    answers that are ready go out together, up to BATCH_BYTES of messages in one stream message."""
    while True:
        answer = await answers.get()
        batch: list[transformer_pb2.TransformStreamAnswer] = []
        size = 0
        while answer is not None:
            batch.append(answer)
            size += len(answer.response.mime)
            if size >= BATCH_BYTES or answers.empty():
                break
            answer = answers.get_nowait()
        if batch:
            await context.write(transformer_pb2.TransformStreamResponse(answers=batch))
        if answer is None:
            return


def _tracking_options(options: transformer_pb2.TransformOptions) -> TrackingOptions | None:
    """The tracking asked for, None for none; raises :class:`BadTrackingOptions` for an unusable nonce or
    prefix (only the prefixes of the kinds of tracking requested are checked)."""
    if not options.track_clicks and not options.track_opens:
        return None
    return TrackingOptions(
        nonce=options.nonce,
        click_url_prefix=options.click_url_prefix if options.track_clicks else None,
        open_url_prefix=options.open_url_prefix if options.track_opens else None,
        prevent_scam=options.prevent_scam,
    )


def _template_options(options: transformer_pb2.TransformOptions) -> TemplateOptions | None:
    """The HTML is a template: its tags' tokens use the request's nonce, or one derived per part when it
    has none; raises :class:`BadTemplateOptions` for a nonce that is set but unusable."""
    if not options.template:
        return None
    return TemplateOptions(options.nonce or None)


def server_credentials(settings: TransformerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port from the POSTWIRE_GRPC_TLS_* files; None when TLS is off."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    key, chain = settings.grpc_tls_key_file.read_bytes(), settings.grpc_tls_cert_file.read_bytes()
    client_ca = settings.grpc_tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=None if client_ca is None else client_ca.read_bytes(),
        require_client_auth=client_ca is not None,
    )


def _grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(
    settings: TransformerSettings,
    stop: asyncio.Event,
    started: Callable[[int], None] | None = None,
    *,
    ops_started: Callable[[int], None] | None = None,
) -> None:
    """Serve gRPC (Transformer + health) and the ops endpoint until ``stop`` is set, then drain.

    ``started`` gets the bound gRPC port and ``ops_started`` the ops port (port 0 settings are allowed).
    """
    pool = WorkerPool(
        settings.transform_workers,
        timeout_s=settings.transform_timeout_s,
        memory_mb=settings.transform_memory_mb,
        in_process=settings.transform_in_process,
    )
    try:
        await pool.warm_up()
        await _serve_grpc(settings, stop, pool, started, ops_started)
    finally:
        await pool.close()


async def _serve_grpc(
    settings: TransformerSettings,
    stop: asyncio.Event,
    pool: WorkerPool,
    started: Callable[[int], None] | None,
    ops_started: Callable[[int], None] | None,
) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
            # a client's TransformStream carries all its messages: many in flight, not HTTP/2's 64 KB
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    transformer_pb2_grpc.add_TransformerServicer_to_server(Transformer(settings, pool, stop), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = _grpc_address(settings.grpc_host, settings.grpc_port)
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    await server.start()
    serving = True
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def ready() -> bool:
        return serving

    ops = asyncio.create_task(
        serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started=ops_started)
    )
    log.info(
        "transformer serving",
        grpc_port=port,
        engine=settings.css_engine,
        tls=credentials is not None,
        client_auth=settings.grpc_tls_client_ca_file is not None,
    )
    if started is not None:
        started(port)
    await stop.wait()
    serving = False
    await health_servicer.enter_graceful_shutdown()  # NOT_SERVING first, so balancers stop routing here
    await server.stop(grace=settings.shutdown_grace_s)
    await ops
    log.info("transformer stopped")
