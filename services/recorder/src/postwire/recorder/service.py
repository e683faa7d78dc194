"""Wiring of the event recorder: NATS, PostgreSQL, forwarding, the ops endpoint, the recorder loop, the
queue-depth sampler (one recorder replica at a time reports it: queue_depth.py) and the accounts' rates
and automatic bulk pause (account_rates.py, one replica too).

/readyz is ready when NATS is connected. Shutdown: the recorder finishes its batch, forwards get a grace;
then NATS and the database pool are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from postwire.bounce_forwarding import forwarder_from
from postwire.core.jetstream import jetstream
from postwire.core.leader import LeaderLease
from postwire.core.natsconn import connect
from postwire.core.ops import ops_app, serve_app
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.recorder import account_rates
from postwire.recorder.queue_depth import JOB, run_sampler
from postwire.recorder.recorder import Recorder, SoftBouncePolicy
from postwire.recorder.settings import RecorderSettings

log = structlog.get_logger(__name__)


async def serve(settings: RecorderSettings, stop: asyncio.Event,
                started: Callable[[int], None] | None = None) -> None:
    """Record events until ``stop``. ``started`` gets the ops port (tests bind port 0)."""
    nc = await connect(settings.nats_url, "postwire-recorder", stop=stop)
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    engine = make_engine(settings.database_url)
    forwarder = forwarder_from(settings, js, make_sessionmaker(engine))
    recorder = Recorder(js, make_sessionmaker(engine), settings.recorder_batch, settings.recorder_retry_s,
                        SoftBouncePolicy.from_settings(settings),
                        on_recorded=forwarder.recorded if forwarder is not None else None)

    async def ready() -> bool:
        return bool(nc.is_connected)

    log.info("recorder.started")
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(serve_app(ops_app(ready), settings.ops_host, settings.ops_port, stop, started))
            tg.create_task(recorder.run(stop))
            # one recorder replica reports queue depth; another takes over 3 intervals after it dies
            lease = LeaderLease(js, JOB, ttl_s=3 * settings.queue_sample_s)
            tg.create_task(run_sampler(js, lease, settings.queue_sample_s, stop))
            # one replica computes the accounts' rates and pauses bulk lanes on complaints
            rates_lease = LeaderLease(js, account_rates.JOB, ttl_s=3 * settings.rates_sample_s)
            tg.create_task(account_rates.run_sampler(js, make_sessionmaker(engine), rates_lease,
                                                     settings.rates_sample_s, stop,
                                                     min_delivered=settings.rates_min_delivered))
    finally:
        if forwarder is not None:  # the recorder has stopped: nothing more is handed over
            await forwarder.close(settings.shutdown_grace_s)
        await nc.close()
        await engine.dispose()
        log.info("recorder.stopped")
