"""Wiring of the bounce service: NATS, PostgreSQL, the recorder and the ops endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from postwire.bounce.recorder import Recorder
from postwire.bounce.settings import BounceSettings
from postwire.core.natsconn import connect
from postwire.core.ops import ops_app, serve_app
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker

log = structlog.get_logger(__name__)


async def serve(settings: BounceSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None) -> None:
    nc = await connect(settings.nats_url, "postwire-bounce", stop=stop)
    js = nc.jetstream()
    await Topology(replicas=settings.stream_replicas).apply(js)
    engine = make_engine(settings.database_url)
    recorder = Recorder(js, make_sessionmaker(engine), settings.recorder_batch, settings.recorder_retry_s)

    async def ready() -> bool:
        return bool(nc.is_connected)

    log.info("bounce.started")
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started))
            tg.create_task(recorder.run(stop))
    finally:
        await nc.close()  # the recorder loop has ended: nothing in flight to drain
        await engine.dispose()
        log.info("bounce.stopped")
