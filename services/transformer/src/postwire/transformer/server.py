"""The gRPC Transformer service (grpc.aio) with the standard gRPC health service and an ops endpoint.

Inlining is CPU-bound and css-inline holds the GIL while it works (two threads run slower than one), so a
thread pool would stall the event loop, health checks included, for the length of each document. The work
therefore runs in a pool of worker *processes*: real parallelism across cores and a loop that stays
responsive. Copying a message to a worker costs about a memcpy; the workers are started once ("spawn",
because gRPC's threads do not survive a fork) and warmed up before the service reports SERVING.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from postwire.core.ops import ops_app, serve_app
from postwire.transformer import metrics
from postwire.transformer.inline import CSS_INLINE, PREMAILER, InlineError
from postwire.transformer.mime import MimeError, TransformResult, transform_mime
from postwire.transformer.settings import TransformerSettings
from postwire.transformer.tracking import BadTrackingOptions, TrackingOptions
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

SERVICE_NAME: Final = transformer_pb2.DESCRIPTOR.services_by_name["Transformer"].full_name
MAX_GRPC_MESSAGE: Final = 64 * 1024 * 1024
_ENGINES: Final = {
    transformer_pb2.CSS_ENGINE_CSS_INLINE: CSS_INLINE,
    transformer_pb2.CSS_ENGINE_PREMAILER: PREMAILER,
}
_WARM_UP: Final = b"Content-Type: text/html\r\n\r\n<style>p{color:red}</style><p>warm</p>\r\n"

log = structlog.get_logger(__name__)


def _ignore_stop_signals() -> None:
    """Workers leave SIGINT/SIGTERM to the parent, which drains requests first and then shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class WorkerPool:
    """Runs :func:`transform_mime` in worker processes; replaces the pool when a worker dies."""

    def __init__(self, workers: int) -> None:
        self._workers = workers or os.cpu_count() or 1
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self._workers, mp_context=context, initializer=_ignore_stop_signals)

    async def transform(
        self, mime: bytes, engine: str, *, inline_css: bool = True, tracking: TrackingOptions | None = None
    ) -> TransformResult:
        executor = self._executor
        # a partial of a module-level function and a frozen dataclass: both pickle to the worker
        work = functools.partial(transform_mime, mime, engine, inline_css=inline_css, tracking=tracking)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, work)
        except BrokenProcessPool:
            if executor is self._executor:  # the first caller to notice replaces it; others just fail
                self._executor = self._new_executor()
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    async def warm_up(self) -> None:
        """Start every worker and import the engines there, so the first request does not pay for it."""
        await asyncio.gather(*(self.transform(_WARM_UP, CSS_INLINE) for _ in range(self._workers)))

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


class Transformer(transformer_pb2_grpc.TransformerServicer):
    """Transform: inline CSS in a message's HTML parts and add tracking; status codes as in the proto."""

    def __init__(self, settings: TransformerSettings, pool: WorkerPool) -> None:
        self._settings = settings
        self._pool = pool

    async def Transform(
        self, request: transformer_pb2.TransformRequest, context: grpc.aio.ServicerContext
    ) -> transformer_pb2.TransformResponse:
        started = time.perf_counter()
        engine = _ENGINES.get(request.options.css_engine, self._settings.css_engine)
        metrics.BYTES.labels("in").inc(len(request.mime))
        outcome, code, details, result = await self._run(request, engine)
        metrics.REQUESTS.labels(outcome).inc()
        metrics.DURATION.labels(engine).observe(time.perf_counter() - started)
        if result is None:  # set_code/set_details + an empty reply: the client sees only the status
            context.set_code(code)
            context.set_details(details)
            return transformer_pb2.TransformResponse()
        metrics.HTML_PARTS.labels(engine).inc(result.html_parts_transformed)
        metrics.BYTES.labels("out").inc(len(result.mime))
        return transformer_pb2.TransformResponse(
            mime=result.mime,
            html_parts_transformed=result.html_parts_transformed,
            changed=result.changed,
            links=result.links,
            open_pixel=result.open_pixel,
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
        except BadTrackingOptions as exc:
            return "invalid", grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
        inline_css = request.options.inline_css or not request.HasField("options")
        if not inline_css and tracking is None:
            return "unchanged", ok, "", TransformResult(request.mime, 0, False)
        try:
            result = await self._pool.transform(
                request.mime, engine, inline_css=inline_css, tracking=tracking
            )
        except (MimeError, InlineError) as exc:
            return "invalid", grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
        except Exception:
            log.exception("transform failed", size=size, engine=engine)
            return "error", grpc.StatusCode.INTERNAL, "internal error while transforming the message", None
        return ("changed" if result.changed else "unchanged"), ok, "", result


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
    pool = WorkerPool(settings.transform_workers)
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
        ]
    )
    health_servicer = health.aio.HealthServicer()
    transformer_pb2_grpc.add_TransformerServicer_to_server(Transformer(settings, pool), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(_grpc_address(settings.grpc_host, settings.grpc_port))
    await server.start()
    serving = True
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def ready() -> bool:
        return serving

    ops = asyncio.create_task(
        serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started=ops_started)
    )
    log.info("transformer serving", grpc_port=port, engine=settings.css_engine)
    if started is not None:
        started(port)
    await stop.wait()
    serving = False
    await health_servicer.enter_graceful_shutdown()  # NOT_SERVING first, so balancers stop routing here
    await server.stop(grace=settings.shutdown_grace_s)
    await ops
    log.info("transformer stopped")
