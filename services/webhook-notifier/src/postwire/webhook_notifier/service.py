"""Wiring of the webhook notifier: NATS, PostgreSQL (the endpoints), the ops endpoint and the notifier.

/readyz is ready when NATS is connected. Shutdown: POSTs in flight finish (docs/webhooks.md); then NATS
and the database pool are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from postwire.core.jetstream import jetstream
from postwire.core.natsconn import connect
from postwire.core.ops import ops_app, serve_app
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.webhook_notifier.notifier import run_notifier
from postwire.webhook_notifier.settings import WebhookSettings

log = structlog.get_logger(__name__)


async def serve(settings: WebhookSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None) -> None:
    """Deliver webhooks until ``stop``. ``started`` gets the ops port (tests bind port 0)."""
    nc = await connect(settings.nats_url, "postwire-webhook-notifier", stop=stop)
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    engine = make_engine(settings.database_url)

    async def ready() -> bool:
        return bool(nc.is_connected)

    log.info("webhook_notifier.started")
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started))
            tg.create_task(run_notifier(settings, js, make_sessionmaker(engine), stop))
    finally:
        await nc.close()
        await engine.dispose()
        log.info("webhook_notifier.stopped")
