"""Running the gateway: connect NATS and PostgreSQL, serve HTTP until ``stop``, then close in order.

Shutdown order matters for "accept means durable": the HTTP server stops accepting and lets in-flight
requests finish (their publishes complete or fail with 503) before NATS and the database are closed.
Beside the server run the shared limits' loop (idle leases given back; at the end all of them, and the
replica leaves) and the purge of expired Idempotency-Keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from postwire.api_gateway.app import create_app
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.idempotency import IdempotencyStore, run_purger
from postwire.api_gateway.settings import ApiSettings
from postwire.core import natsconn, ops
from postwire.core.bodies import BodyStore
from postwire.core.intake import Intake
from postwire.core.jetstream import jetstream
from postwire.core.sharedlimits import LimitStore
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker

log = structlog.get_logger(__name__)


async def serve(settings: ApiSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None) -> None:
    """Serve the API on ``settings.http_host:http_port`` until ``stop`` is set; ``started`` receives the
    bound port (useful with port 0)."""
    nc = await natsconn.connect(settings.nats_url, "api-gateway", stop=stop)
    engine = make_engine(settings.database_url)  # bound values hidden from errors: they get logged
    try:
        js = jetstream(nc)
        await Topology.from_settings(settings).apply(js)
        bodies = BodyStore(js, settings.inline_body_max)
        intake = Intake(js, bodies, publish_timeout=settings.publish_timeout_s)
        limits = LimitStore(js, nc, "api-gateway")
        await limits.start()
        app = create_app(Deps(settings, nc, intake, make_sessionmaker(engine), limits))
        idempotency: IdempotencyStore = app.state.idempotency

        def on_started(port: int) -> None:
            log.info("api.listening", host=settings.http_host, port=port)
            if started is not None:
                started(port)

        # the background loops stop with the server, after its last request
        done = asyncio.Event()
        purge_every = max(1.0, min(600.0, settings.idempotency_ttl_s / 4))
        background = [asyncio.create_task(limits.run(done)),
                      asyncio.create_task(run_purger(idempotency, purge_every, done))]
        try:
            await ops.serve_app(app, settings.http_host, settings.http_port, stop, started=on_started)
        finally:
            done.set()
            for failed in await asyncio.gather(*background, return_exceptions=True):
                if failed is not None:
                    log.error("api.background_failed", error=repr(failed))
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await engine.dispose()
        log.info("api.stopped")
