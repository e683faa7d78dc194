"""Wiring: connect to NATS, declare the topology and consumers, run router and senders until stop.

``serve(settings, stop)`` is the whole service; ``python -m postwire.dispatcher`` runs it under the
process lifecycle, and tests run it in-process with their own settings and stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from postwire.core import natsconn
from postwire.core.bodies import BodyStore
from postwire.core.jetstream import PipelinedJetStream, jetstream
from postwire.core.lanes import BULK, STREAMS, TRANSACTIONAL
from postwire.core.ops import ReadyCheck, ops_app, serve_app
from postwire.core.pull import StandingPull
from postwire.core.resolver import make_resolver
from postwire.core.settings import verp_secret_bytes
from postwire.core.sharding import owned_shards
from postwire.core.topology import (
    INBOUND,
    INBOUND_FILTERS,
    INBOUND_HELD_FILTER,
    OUTBOUND,
    Topology,
    ensure_consumer,
    outbound_retry_subject,
    outbound_subject,
    work_consumer,
)
from postwire.core.tracking import tracking_key
from postwire.db.engine import async_url, make_sessionmaker
from postwire.db.suppressions import SuppressionMirror
from postwire.dispatcher import metrics
from postwire.dispatcher.bulk_hold import BulkHold, PausedAccounts
from postwire.dispatcher.delivery import Deliverer
from postwire.dispatcher.dkim import DkimSigner, make_signer
from postwire.dispatcher.lanes import WeightedSlots
from postwire.dispatcher.mx import MxResolver
from postwire.dispatcher.personalise import Personaliser
from postwire.dispatcher.relay_host import RelayRoutes
from postwire.dispatcher.rendering import Renderer
from postwire.dispatcher.retry import RetryPolicy
from postwire.dispatcher.router import make_router
from postwire.dispatcher.sender import Sender
from postwire.dispatcher.settings import DispatcherSettings
from postwire.dispatcher.shaping import load_rules
from postwire.dispatcher.smtp_client import ClientConfig
from postwire.dispatcher.smtp_pool import ConnectionPool
from postwire.dispatcher.suppressed import KeyFilter, SuppressionCheck
from postwire.dispatcher.throttle import Shaper
from postwire.dispatcher.transform import TransformerClient
from postwire.dispatcher.worker import Consumer, Handler

log = structlog.get_logger(__name__)

# per lane: transactional keeps the names (and subjects) from before lanes, so nothing queued is lost
ROUTER_CONSUMERS = {TRANSACTIONAL: "router", BULK: "router-bulk"}
ROUTER_CONSUMER = ROUTER_CONSUMERS[TRANSACTIONAL]
HELD_CONSUMER = "router-held"  # bulk mail of paused accounts (bulk_hold.py)


def sender_consumer(shard: int, lane: str = TRANSACTIONAL) -> str:
    return f"bulk-{shard:03d}" if lane == BULK else f"sender-{shard:03d}"


def retry_consumer(shard: int, lane: str = TRANSACTIONAL) -> str:
    return f"bulk-retry-{shard:03d}" if lane == BULK else f"retry-{shard:03d}"


async def serve(settings: DispatcherSettings, stop: asyncio.Event,
                ops_started: Callable[[int], None] | None = None) -> None:
    """Run the dispatcher until ``stop`` is set, then drain: stop fetching, let in-flight messages
    finish within ``shutdown_grace_s`` (the rest are nak'd), QUIT pooled connections, drain NATS."""
    # bad rules stop the boot here, before NATS; one provider may hold at most a share of the fresh-mail
    # slots, so stalled destinations cannot take them all (docs/delivery.md)
    shaper = Shaper(load_rules(settings.shaping_file),
                    ready_cap=max(1, int(settings.max_concurrency * settings.provider_slot_share)))
    nc = await natsconn.connect(settings.nats_url, "postwire-dispatcher", stop=stop)
    js = jetstream(nc)
    await Topology.from_settings(settings).apply(js)
    bodies = BodyStore(js, settings.inline_body_max, cache_bytes=settings.body_cache_max)
    transformer = TransformerClient.from_settings(settings)
    pool = ConnectionPool(_client_config(settings), idle_s=settings.connection_idle_s)
    shaper.on_change(pool.budget_changed)
    pool.start()
    consumers: list[Consumer] = []
    background: list[asyncio.Task[None]] = [asyncio.create_task(shaper.run())]
    try:
        signer = make_signer(settings)
        if settings.dispatcher_role in ("all", "router"):
            suppressions = SuppressionCheck(SuppressionMirror(js), settings.suppression_cache_ttl_s,
                                            KeyFilter(js))
            background.append(asyncio.create_task(suppressions.follow()))
            consumers += await _router_consumers(js, bodies, transformer, settings, signer, suppressions)
        if settings.dispatcher_role in ("all", "sender"):
            sending, sender = await _sender_consumers(js, bodies, pool, shaper, settings, signer)
            consumers += sending
            background += [asyncio.create_task(_sample_queues(js, settings)),
                           asyncio.create_task(sender.heartbeats.run())]
        log.info("dispatcher.started", role=settings.dispatcher_role, consumers=len(consumers),
                 providers=sorted(shaper.rules.providers))
        await asyncio.gather(
            serve_app(ops_app(_ready(nc)), settings.ops_host, settings.ops_port, stop, ops_started),
            *(c.run(stop, settings.shutdown_grace_s) for c in consumers),
        )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for consumer in consumers:
            await consumer.close()
        await pool.close()
        await transformer.close()
        with contextlib.suppress(Exception):
            await nc.flush(timeout=5)  # acks and naks of the last messages
        await nc.close()
        log.info("dispatcher.stopped")


def _ready(nc: Client) -> ReadyCheck:
    """Ready while NATS is connected: without it the dispatcher can neither fetch nor settle."""

    async def ready() -> bool:
        return bool(nc.is_connected)

    return ready


def _client_config(settings: DispatcherSettings) -> ClientConfig:
    return ClientConfig(ehlo_hostname=settings.ehlo_hostname, connect_timeout_s=settings.connect_timeout_s,
                        command_timeout_s=settings.command_timeout_s, starttls=settings.mx_starttls,
                        tls_verify=settings.mx_tls_verify)


async def _bind(js: JetStreamContext, stream: str, durable: str, filter_subject: str | None,
                settings: DispatcherSettings, max_ack_pending: int = 1024) -> StandingPull:
    await ensure_consumer(js, stream, work_consumer(durable, filter_subject=filter_subject,
                                                    ack_wait_s=settings.ack_wait_s,
                                                    max_ack_pending=max_ack_pending))
    return StandingPull(js, stream, durable)


def _lane_slots(size: int, bulk_consumers: int, settings: DispatcherSettings, stage: str) -> WeightedSlots:
    """``size`` slots for the lanes to share, plus one for each bulk consumer's idle request (an idle
    consumer asks for one message and holds its slot meanwhile), so that adding the bulk lane leaves
    transactional mail as much room as it had alone."""
    weights = {TRANSACTIONAL: settings.transactional_weight, BULK: settings.bulk_weight}
    return WeightedSlots(size + bulk_consumers, weights, stage=stage)


async def _router_consumers(js: PipelinedJetStream, bodies: BodyStore, transformer: TransformerClient,
                            settings: DispatcherSettings, signer: DkimSigner,
                            suppressions: SuppressionCheck) -> list[Consumer]:
    """One consumer per lane (inbound.<account> and inbound.<account>.bulk), sharing the router's slots
    by the weighted choice (postwire.dispatcher.lanes): a burst of bulk submissions waits in INBOUND,
    not in front of a transactional message. A third consumer reads the held bulk mail of accounts
    whose bulk lane is paused (inbound.<account>.held, postwire.dispatcher.bulk_hold) in the bulk lane's
    share."""
    engine = create_async_engine(async_url(settings.database_url), poolclass=NullPool, hide_parameters=True)
    hold = BulkHold(js, PausedAccounts(make_sessionmaker(engine), settings.bulk_pause_cache_ttl_s),
                    settings.bulk_hold_recheck_s)
    router = make_router(js, bodies, transformer, settings, signer, suppressions, hold)
    slots = _lane_slots(settings.max_concurrency, 2, settings, "router")
    consumers = []
    for lane in STREAMS:
        sub = await _bind(js, INBOUND, ROUTER_CONSUMERS[lane], INBOUND_FILTERS[lane], settings)
        consumers.append(Consumer(sub, router.handle, slots.lane(lane), stage="router",
                                  batch=settings.fetch_batch))
    sub = await _bind(js, INBOUND, HELD_CONSUMER, INBOUND_HELD_FILTER, settings,
                      max_ack_pending=settings.bulk_hold_max_ack_pending)
    consumers.append(Consumer(sub, router.handle, slots.lane(BULK), stage="router",
                              batch=settings.fetch_batch))
    return consumers


def _deliverer(settings: DispatcherSettings, pool: ConnectionPool, shaper: Shaper) -> Deliverer:
    """To each domain's MX hosts, or to the relay host for every domain when one is set."""
    resolver = MxResolver(make_resolver(settings.nameservers, settings.dns_timeout_s))
    relay = settings.relay
    if relay is None:
        return Deliverer(resolver, pool, shaper, settings.mx_port)
    log.info("dispatcher.relay_host", relay_host=str(relay))
    return Deliverer(RelayRoutes(relay, resolver), pool, shaper, relay.port)


async def _sender_consumers(js: PipelinedJetStream, bodies: BodyStore, pool: ConnectionPool, shaper: Shaper,
                            settings: DispatcherSettings, signer: DkimSigner,
                            ) -> tuple[list[Consumer], Sender]:
    """Two durable consumers per owned shard and lane: fresh mail and deferred mail, each with its own
    concurrency limit, so neither a retry backlog (pending naks) nor a wave of due retries can take
    the capacity new mail needs. The lanes' consumers share those limits by the weighted choice
    (postwire.dispatcher.lanes)."""
    deliverer = _deliverer(settings, pool, shaper)
    policy = RetryPolicy(settings.retry_base_s, settings.retry_max_s, settings.message_lifetime_s)
    key = tracking_key(verp_secret_bytes(settings))
    sender = Sender(js, bodies, deliverer, policy, shaper, shards=settings.shards,
                    heartbeat_s=settings.ack_wait_s / 3, personaliser=Personaliser(key, signer),
                    renderer=Renderer(key), body_memory_max=settings.body_memory_max)
    handler: Handler = sender.handle
    shards = owned_shards(settings.replica_index, settings.replica_count, settings.shards)
    fresh_slots = _lane_slots(settings.max_concurrency, len(shards), settings, "sender")
    retry_slots = _lane_slots(settings.retry_concurrency, len(shards), settings, "retry")
    consumers = []
    for shard in shards:
        for lane in STREAMS:
            sub = await _bind(js, OUTBOUND, sender_consumer(shard, lane), outbound_subject(shard, lane),
                              settings, max_ack_pending=settings.sender_max_ack_pending)
            consumers.append(Consumer(sub, handler, fresh_slots.lane(lane), stage="sender",
                                      batch=settings.fetch_batch))
            sub = await _bind(js, OUTBOUND, retry_consumer(shard, lane), outbound_retry_subject(shard, lane),
                              settings, max_ack_pending=settings.retry_max_ack_pending)
            consumers.append(Consumer(sub, handler, retry_slots.lane(lane), stage="retry",
                                      batch=settings.fetch_batch))
    return consumers, sender


async def _sample_queues(js: JetStreamContext, settings: DispatcherSettings) -> None:
    """Refresh the queue-depth gauge from consumer info (pending + unacked, summed over owned shards)."""
    shards = owned_shards(settings.replica_index, settings.replica_count, settings.shards)
    queues = {"fresh": [sender_consumer(s) for s in shards], "retry": [retry_consumer(s) for s in shards],
              "bulk": [sender_consumer(s, BULK) for s in shards],
              "bulk_retry": [retry_consumer(s, BULK) for s in shards]}
    while True:
        for queue, names in queues.items():
            total = 0
            for name in names:
                try:
                    info = await js.consumer_info(OUTBOUND, name)
                except (nats.errors.Error, TimeoutError, OSError) as e:
                    log.debug("dispatcher.queue_sample_failed", consumer=name, error=str(e))
                    continue
                total += (info.num_pending or 0) + (info.num_ack_pending or 0)
            metrics.QUEUE_MESSAGES.labels(queue).set(total)
        await asyncio.sleep(settings.queue_sample_s)
