"""Wiring of the bounce service: NATS, PostgreSQL, the ops endpoint, and the components of its role.

Components (``POSTWIRE_BOUNCE_ROLE``; ``all`` runs every one in this process, the local default):

- ``recorder``: EVENTS → PostgreSQL (recorder.py), and the queue-depth sampler of every stream (one
  recorder replica at a time reports it: queue_depth.py);
- ``receiver``: the SMTP MX of the bounce domain, DSNs → events (receiver.py);
- ``notifier``: EVENTS → signed webhook POSTs, one queue per endpoint (webhooks/).

Bounce forwarding (forwarding.py), when POSTWIRE_BOUNCE_FORWARD names accounts, is fed by the receiver
(bounced, complained) and the recorder (failed, suppressed, deferred, delivered) of the same process.

/readyz is ready when NATS is connected and, in a role with the receiver, the receiver is listening.
Shutdown: the receiver stops accepting and lets transactions in DATA finish, forwards get a grace, the
recorder finishes its batch; then NATS and the database pool are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from postwire.bounce.forwarding import Forwarder, RelayConfig
from postwire.bounce.queue_depth import JOB, run_sampler
from postwire.bounce.receiver import (
    BounceHandler,
    BounceListener,
    DbOriginals,
    ReceiverConfig,
    start_receiver,
)
from postwire.bounce.recorder import Recorder, SoftBouncePolicy
from postwire.bounce.settings import BounceSettings
from postwire.bounce.webhooks import run_notifier
from postwire.core.jetstream import jetstream
from postwire.core.leader import LeaderLease
from postwire.core.natsconn import connect
from postwire.core.ops import ops_app, serve_app
from postwire.core.settings import verp_secret_bytes
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker

log = structlog.get_logger(__name__)


def runs(settings: BounceSettings, component: str) -> bool:
    return settings.bounce_role in ("all", component)


async def serve(settings: BounceSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None,
                receiver_started: Callable[[BounceListener], None] | None = None) -> None:
    """Run the role's components until ``stop``. ``started`` gets the ops port, ``receiver_started``
    the bound receiver (tests bind port 0)."""
    nc = await connect(settings.nats_url, "postwire-bounce", stop=stop)
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    engine = make_engine(settings.database_url)
    feeds_forwarding = runs(settings, "receiver") or runs(settings, "recorder")
    forwarder = _forwarder(settings, make_sessionmaker(engine)) if feeds_forwarding else None
    listener: BounceListener | None = None
    if runs(settings, "receiver"):
        listener = await _start_receiver(settings, nc, engine, forwarder)
        if receiver_started is not None:
            receiver_started(listener)

    async def ready() -> bool:
        return bool(nc.is_connected) and (listener is None or listener.listening)

    log.info("bounce.started", role=settings.bounce_role)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started))
            if runs(settings, "recorder"):
                recorder = Recorder(js, make_sessionmaker(engine), settings.recorder_batch,
                                    settings.recorder_retry_s, SoftBouncePolicy.from_settings(settings),
                                    on_recorded=forwarder.recorded if forwarder is not None else None)
                tg.create_task(recorder.run(stop))
                # one recorder replica reports queue depth; another takes over 3 intervals after it dies
                lease = LeaderLease(js, JOB, ttl_s=3 * settings.queue_sample_s)
                tg.create_task(run_sampler(js, lease, settings.queue_sample_s, stop))
            if listener is not None:
                tg.create_task(_run_receiver(listener, settings, stop))
            if runs(settings, "notifier"):
                tg.create_task(run_notifier(settings, js, make_sessionmaker(engine), stop))
    finally:
        if forwarder is not None:  # receiver drained, recorder stopped: nothing more is handed over
            await forwarder.close(settings.shutdown_grace_s)
        await nc.close()  # every loop has ended: nothing in flight to drain
        await engine.dispose()
        log.info("bounce.stopped")


def _forwarder(settings: BounceSettings, sessions: async_sessionmaker[AsyncSession]) -> Forwarder | None:
    if not settings.bounce_forward:
        return None
    return Forwarder(settings.bounce_forward, RelayConfig(
        host=settings.forward_smtp_host, port=settings.forward_smtp_port,
        from_address=settings.forward_from or f"postmaster@{settings.bounce_domain}",
        validate_certs=settings.forward_smtp_validate_certs,
        reporting_mta=settings.bounce_smtp_hostname or settings.bounce_domain,
    ), sessions)


async def _start_receiver(settings: BounceSettings, nc: Client, engine: AsyncEngine,
                          forwarder: Forwarder | None) -> BounceListener:
    handler = BounceHandler(
        config=ReceiverConfig(settings.bounce_domain, verp_secret_bytes(settings),
                              settings.bounce_unknown_grace_s),
        originals=DbOriginals(make_sessionmaker(engine)),
        js=jetstream(nc),
        queue_connected=lambda: bool(nc.is_connected),
        on_event=forwarder,
    )
    return await start_receiver(
        handler, host=settings.bounce_smtp_host, port=settings.bounce_smtp_port,
        hostname=settings.bounce_smtp_hostname or settings.bounce_domain,
        max_message_size=settings.bounce_max_message_size, timeout_s=settings.bounce_smtp_timeout_s,
    )


async def _run_receiver(listener: BounceListener, settings: BounceSettings, stop: asyncio.Event) -> None:
    await stop.wait()
    await listener.drain(settings.shutdown_grace_s)
