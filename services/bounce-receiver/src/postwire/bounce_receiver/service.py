"""Wiring of the bounce receiver: NATS, PostgreSQL (the recipients a return path must name, the DMARC
reports mailed to dmarc@), forwarding, the ops endpoint and the SMTP listener.

/readyz is ready when NATS is connected and the listener is accepting. Shutdown: the listener stops
accepting and lets transactions in DATA finish, forwards get a grace; then NATS and the database pool are
closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from postwire.bounce_forwarding import forwarder_from
from postwire.bounce_receiver.dmarc_mail import DbReportStore
from postwire.bounce_receiver.receiver import (
    BounceHandler,
    BounceListener,
    DbOriginals,
    ReceiverConfig,
    start_receiver,
)
from postwire.bounce_receiver.settings import ReceiverSettings
from postwire.core.jetstream import jetstream
from postwire.core.natsconn import connect
from postwire.core.ops import ops_app, serve_app
from postwire.core.settings import verp_secret_bytes
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker

log = structlog.get_logger(__name__)


async def serve(settings: ReceiverSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None,
                receiver_started: Callable[[BounceListener], None] | None = None) -> None:
    """Run the bounce MX until ``stop``. ``started`` gets the ops port, ``receiver_started`` the bound
    listener (tests bind port 0)."""
    nc = await connect(settings.nats_url, "postwire-bounce-receiver", stop=stop)
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    engine = make_engine(settings.database_url)
    forwarder = forwarder_from(settings, js, make_sessionmaker(engine))
    handler = BounceHandler(
        config=ReceiverConfig(settings.bounce_domain, verp_secret_bytes(settings),
                              settings.bounce_unknown_grace_s),
        originals=DbOriginals(make_sessionmaker(engine)),
        js=js,
        queue_connected=lambda: bool(nc.is_connected),
        on_event=forwarder,
        reports=DbReportStore(make_sessionmaker(engine)),
    )
    listener = await start_receiver(
        handler, host=settings.bounce_smtp_host, port=settings.bounce_smtp_port,
        hostname=settings.bounce_smtp_hostname or settings.bounce_domain,
        max_message_size=settings.bounce_max_message_size, timeout_s=settings.bounce_smtp_timeout_s,
    )
    if receiver_started is not None:
        receiver_started(listener)

    async def ready() -> bool:
        return bool(nc.is_connected) and listener.listening

    log.info("bounce_receiver.started", port=listener.port)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started))
            tg.create_task(_drain_on_stop(listener, settings, stop))
    finally:
        if forwarder is not None:  # the listener has drained: nothing more is handed over
            await forwarder.close(settings.shutdown_grace_s)
        await nc.close()
        await engine.dispose()
        log.info("bounce_receiver.stopped")


async def _drain_on_stop(listener: BounceListener, settings: ReceiverSettings, stop: asyncio.Event) -> None:
    await stop.wait()
    await listener.drain(settings.shutdown_grace_s)
