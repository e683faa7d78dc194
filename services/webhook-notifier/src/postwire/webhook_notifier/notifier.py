"""The webhook notifier (docs/webhooks.md).

Two stages, both JetStream consumers, so nothing is lost while an endpoint, PostgreSQL or the service
itself is down:

1. **Fan-out.** The durable consumer ``webhooks`` on EVENTS, filtered to the events some webhook wants
   (``subscriptions.py``), turns each event into one delivery per matching endpoint, published to that
   endpoint's own subject ``webhooks.<id>`` (stream WEBHOOKS, work queue), then acks the event. It
   never calls a customer, so it never waits on one.
2. **Endpoint workers.** Each endpoint has two durable consumers: ``wh-<id>`` on its fresh deliveries
   (``max_ack_pending`` = its concurrency, so at most that many POSTs are in flight for it, across
   replicas) and ``whr-<id>`` on its retries (``webhooks.<id>.retry``; a retry not yet due is nak'd
   with the remaining delay, so JetStream holds the timer). A failed attempt is re-published to the
   retry subject with its next due time and the fresh message is acked: a failing delivery never
   occupies a fresh slot, and a slow or dead endpoint only ever holds up its own consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core import settle
from postwire.core.pull import BatchPull
from postwire.core.topology import (
    EVENTS,
    WEBHOOKS,
    ensure_consumer,
    webhook_retry_subject,
    webhook_subject,
    work_consumer,
)
from postwire.db import webhooks as store
from postwire.db.events_query import event_proto_json
from postwire.db.webhooks import Delivery, UnsafeUrl
from postwire.v1 import envelope_pb2
from postwire.webhook_notifier import metrics, webhook_signature
from postwire.webhook_notifier.attempt_log import AttemptLog
from postwire.webhook_notifier.settings import WebhookSettings
from postwire.webhook_notifier.ssrf import http_client, pinned_request
from postwire.webhook_notifier.subscriptions import FANOUT_CONSUMER, HookRef, Subscriptions

log = structlog.get_logger(__name__)

FRESH_PREFIX, RETRY_PREFIX = "wh-", "whr-"
USER_AGENT = "Postwire-Webhooks/1"
REFUSED = "refused: "  # the error of an attempt the URL policy stopped before connecting
TRANSIENT = (OperationalError, DBAPIError, OSError, nats.errors.Error, TimeoutError)


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """Delay after the ``attempts``-th failure: exponential, capped, ±25 % jitter so endpoints that
    failed together do not all come back at once."""
    raw = min(max_s, base_s * 2 ** max(0, attempts - 1))
    return float(raw * random.uniform(0.75, 1.25))


# ----------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class Endpoint:
    id: str
    account_id: str
    url: str
    secret: str


class EndpointCache:
    """Short-lived copies of endpoints' URL and secret: per delivery a lookup would otherwise cost a
    query. A change shows within ``ttl_s`` (a deleted endpoint's queue is then dropped)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_s: float) -> None:
        self._sessions, self._ttl = sessions, ttl_s
        self._endpoints: dict[str, tuple[float, Endpoint | None]] = {}

    async def endpoint(self, webhook_id: str) -> Endpoint | None:
        hit = self._endpoints.get(webhook_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        async with self._sessions() as s:
            row = await store.webhook_by_id(s, webhook_id)
        ep = Endpoint(row.id, row.account_id, row.url, row.secret) if row is not None and row.active else None
        self._endpoints[webhook_id] = (time.monotonic() + self._ttl, ep)
        return ep


@dataclass
class Context:
    settings: WebhookSettings
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    cache: EndpointCache
    subscriptions: Subscriptions
    stop: asyncio.Event
    attempts: AttemptLog


# ------------------------------------------------------------------------------ endpoint worker


class EndpointWorker:
    """Pulls one endpoint's fresh and retry queues and POSTs, at most ``webhook_concurrency`` at once."""

    def __init__(self, webhook_id: str, ctx: Context) -> None:
        self.id, self._ctx = webhook_id, ctx
        self.halt = asyncio.Event()
        self._slots = asyncio.Semaphore(ctx.settings.webhook_concurrency)
        self._client = http_client(ctx.settings.webhook_timeout_s, ctx.settings.webhook_concurrency)

    def _running(self) -> bool:
        return not (self._ctx.stop.is_set() or self.halt.is_set())

    async def run(self) -> None:
        s = self._ctx.settings
        ack_wait = 3 * s.webhook_timeout_s + 30
        try:
            subs = []
            for prefix, subject, pending in (
                    (FRESH_PREFIX, webhook_subject(self.id), s.webhook_concurrency),
                    (RETRY_PREFIX, webhook_retry_subject(self.id), s.webhook_retry_max_pending)):
                await ensure_consumer(self._ctx.js, WEBHOOKS, work_consumer(
                    prefix + self.id, filter_subject=subject, ack_wait_s=ack_wait, max_ack_pending=pending))
                subs.append(await self._ctx.js.pull_subscribe_bind(durable=prefix + self.id, stream=WEBHOOKS))
            async with asyncio.TaskGroup() as tg:
                for sub in subs:
                    tg.create_task(self._pull(sub))
        finally:
            await self._client.aclose()

    async def _pull(self, sub: Any) -> None:
        batch, wait = self._ctx.settings.webhook_concurrency, self._ctx.settings.webhook_fetch_wait_s
        while self._running():
            try:
                msgs = await sub.fetch(batch, timeout=wait)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as e:
                log.warning("webhooks.fetch_failed", webhook_id=self.id, error=str(e))
                await asyncio.sleep(wait)
                continue
            await asyncio.gather(*(self._handle(m) for m in msgs))
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        d = Delivery.from_headers(self.id, msg.headers, msg.data)
        try:
            now = time.time()
            if d.not_before > now:  # a retry that is not due: let JetStream hold it until it is
                await settle.nak(msg, delay=d.not_before - now)
                return
            ep = await self._ctx.cache.endpoint(self.id)
            if ep is None:  # the webhook was deleted: its queue goes with it
                await settle.ack(msg)
                return
            async with self._slots:
                error = await self._attempt(ep, d)
            if error is None:
                await settle.ack(msg)  # not sent (NATS failing over): posted again after ack_wait
            else:
                await self._failed(msg, d, error)
        except TRANSIENT as e:
            log.warning("webhooks.handle_failed", webhook_id=self.id, event_id=d.event_id, error=str(e))
            await self._nak(msg)
        except Exception:  # a bug must not end the worker (and its endpoint's deliveries) for good
            log.exception("webhooks.handle_error", webhook_id=self.id, event_id=d.event_id)
            await self._nak(msg)

    async def _nak(self, msg: Msg) -> None:
        await settle.give_back(msg, delay=self._ctx.settings.webhook_backoff_max_s)

    async def _attempt(self, ep: Endpoint, d: Delivery) -> str | None:
        """One signed POST, logged; None when the endpoint answered 2xx, else why not."""
        start = time.perf_counter()
        status, error = await self._post(ep, d)
        elapsed = time.perf_counter() - start
        outcome = "refused" if error and error.startswith(REFUSED) else "failed" if error else "delivered"
        metrics.ATTEMPTS.labels(outcome).inc()
        if outcome != "refused":
            metrics.ATTEMPT_SECONDS.observe(elapsed)
        self._ctx.attempts.add(d, outcome, status, error or "", elapsed)
        if error is None:
            log.info("webhooks.delivered", webhook_id=ep.id, event_id=d.event_id, attempt=d.attempts + 1,
                     status=status)
        return error

    async def _post(self, ep: Endpoint, d: Delivery) -> tuple[int | None, str | None]:
        """(the endpoint's HTTP status if it answered, the error unless it answered 2xx)."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   webhook_signature.HEADER: webhook_signature.sign(ep.secret, d.body),
                   "Postwire-Webhook-Id": ep.id,
                   "Postwire-Event-Id": d.event_id, "Postwire-Delivery-Attempt": str(d.attempts + 1)}
        try:
            request = await pinned_request(self._client, ep.url, self._ctx.settings.url_policy(), d.body,
                                           headers)
        except UnsafeUrl as e:
            log.warning("webhooks.refused", webhook_id=ep.id, event_id=d.event_id, error=str(e))
            return None, f"{REFUSED}{e}"
        try:
            async with asyncio.timeout(self._ctx.settings.webhook_timeout_s):
                response = await self._client.send(request, stream=True)  # the body is never read
                await response.aclose()
        except (httpx.HTTPError, TimeoutError, OSError) as e:
            return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def _failed(self, msg: Msg, d: Delivery, error: str) -> None:
        """Schedule the next attempt on the retry subject, or park it once the window is over."""
        s, now, attempts = self._ctx.settings, time.time(), d.attempts + 1
        if now - d.first_at >= s.webhook_retry_window_s:
            async with self._ctx.sessions.begin() as session:
                await store.park(session, webhook_id=self.id, account_id=d.account_id, event_id=d.event_id,
                                 payload=json.loads(d.body), last_error=error, attempts=attempts,
                                 created_at=datetime.fromtimestamp(d.first_at, UTC))
            await settle.ack(msg)
            metrics.PARKED.inc()
            log.warning("webhooks.parked", webhook_id=self.id, event_id=d.event_id, attempts=attempts,
                        error=error)
            return
        delay = backoff(attempts, s.webhook_backoff_base_s, s.webhook_backoff_max_s)
        nxt = replace(d, attempts=attempts, not_before=now + delay, last_error=error)
        # the id includes first_at: a replayed delivery restarts at attempt 1 and must not be deduplicated
        msg_id = f"{d.event_id}:{self.id}:{d.first_at:.3f}:{attempts}"
        await store.enqueue(self._ctx.js, nxt, msg_id, retry=True)
        await settle.ack(msg)
        log.info("webhooks.retry_scheduled", webhook_id=self.id, event_id=d.event_id, attempts=attempts,
                 retry_in=round(delay, 3), error=error)


# ------------------------------------------------------------------------------- worker registry


class Workers:
    """The running endpoint workers, started on demand and reconciled with the webhooks table."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._running: dict[str, tuple[EndpointWorker, asyncio.Task[None]]] = {}

    def ensure(self, webhook_id: str) -> None:
        if webhook_id in self._running or self._ctx.stop.is_set():
            return
        worker = EndpointWorker(webhook_id, self._ctx)
        task = asyncio.create_task(worker.run(), name=f"webhook-{webhook_id}")
        self._running[webhook_id] = (worker, task)
        task.add_done_callback(lambda t: self._ended(webhook_id, t))

    def _ended(self, webhook_id: str, task: asyncio.Task[None]) -> None:
        entry = self._running.get(webhook_id)
        if entry is not None and entry[1] is task:
            del self._running[webhook_id]
        if not task.cancelled() and task.exception() is not None:  # restarted by the next reconcile
            log.warning("webhooks.worker_failed", webhook_id=webhook_id, error=str(task.exception()))

    async def reconcile(self) -> None:
        """Start a worker for every active webhook; remove the queues of deleted ones.

        Consumers are listed *before* the table is read: a consumer that exists then belongs to a
        webhook committed before, which the read therefore sees, so a new endpoint is never taken for
        a deleted one."""
        known = set(self._running) | {name.split("-", 1)[1] for name in await self._consumer_names()}
        async with self._ctx.sessions() as s:
            active = await store.all_active_webhook_ids(s)
        for webhook_id in active:
            self.ensure(webhook_id)
        for webhook_id in known - active:
            await self._remove(webhook_id)

    async def _consumer_names(self) -> set[str]:
        """Every endpoint consumer on WEBHOOKS (the server lists at most 256 per call)."""
        names: set[str] = set()
        offset = 0
        while True:
            page = await self._ctx.js.consumers_info(WEBHOOKS, offset=offset)
            names.update(c.name for c in page if c.name and c.name.startswith((FRESH_PREFIX, RETRY_PREFIX)))
            if len(page) < 256:
                return names
            offset += len(page)

    async def _remove(self, webhook_id: str) -> None:
        entry = self._running.pop(webhook_id, None)
        if entry is not None:
            entry[0].halt.set()
            with contextlib.suppress(Exception):
                await entry[1]
        js = self._ctx.js
        for name in (FRESH_PREFIX + webhook_id, RETRY_PREFIX + webhook_id):
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(WEBHOOKS, name)
        for subject in (webhook_subject(webhook_id), webhook_retry_subject(webhook_id)):
            await js.purge_stream(WEBHOOKS, subject=subject)
        log.info("webhooks.endpoint_removed", webhook_id=webhook_id)

    async def drain(self) -> None:
        """Wait for every worker to finish its current batch (they watch the same stop event)."""
        tasks = [t for _, t in self._running.values()]
        await asyncio.gather(*tasks, return_exceptions=True)


# ------------------------------------------------------------------------------------------ fan-out


def _parse_event(msg: Msg) -> envelope_pb2.Event | None:
    ev = envelope_pb2.Event()
    try:
        ev.ParseFromString(msg.data)
    except Exception:  # not an Event: no endpoint could ever receive it
        log.error("webhooks.poison_event", subject=msg.subject)
        return None
    return ev


async def _enqueue(ctx: Context, workers: Workers, ev: envelope_pb2.Event, hooks: Sequence[HookRef]) -> None:
    """One delivery per webhook, under the id ``<event>:<webhook>`` that WEBHOOKS deduplicates."""
    event, first_at = event_proto_json(ev), time.time()
    for h in hooks:
        body = store.body_bytes(store.payload(h.id, event))
        d = Delivery(webhook_id=h.id, account_id=ev.account_id, event_id=ev.event_id, body=body,
                     first_at=first_at)
        await store.enqueue(ctx.js, d, f"{ev.event_id}:{h.id}")
        metrics.ENQUEUED.inc()
        workers.ensure(h.id)


async def _fan_out_one(ctx: Context, workers: Workers, msg: Msg) -> None:
    ev = _parse_event(msg)
    if ev is None:
        await settle.term(msg)
        return
    hooks = await ctx.subscriptions.hooks_for(ev.account_id, ev.type)
    if hooks:
        await _enqueue(ctx, workers, ev, hooks)
    # not sent (NATS failing over): the event comes back after ack_wait and its deliveries, published
    # again under the same ids, are deduplicated
    await settle.ack(msg)


async def _fan_out(ctx: Context, workers: Workers) -> None:
    """EVENTS → per-endpoint queues, one event at a time so each endpoint's queue keeps stream order."""
    s = ctx.settings
    # the consumer and its filter come from the first reconcile
    ready, stopped = (asyncio.ensure_future(e.wait()) for e in (ctx.subscriptions.ready, ctx.stop))
    await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopped.cancel()
    if ctx.stop.is_set():
        return
    pull = BatchPull(ctx.js, EVENTS, FANOUT_CONSUMER, batch=s.webhook_fanout_batch)
    await pull.start()
    try:
        while not ctx.stop.is_set():
            msgs = await pull.next(timeout_s=s.webhook_fetch_wait_s)
            for i, msg in enumerate(msgs):
                try:
                    await _fan_out_one(ctx, workers, msg)
                except TRANSIENT as e:  # database or NATS trouble: the rest come back later, in order
                    log.warning("webhooks.fanout_failed", error=str(e).splitlines()[0] if str(e) else repr(e))
                    await _nak_all(msgs[i:], s.webhook_backoff_base_s)
                    break
    finally:
        await pull.close()


async def _reconcile(ctx: Context, workers: Workers) -> None:
    """The fan-out's filter and the endpoint workers, in step with the webhooks table."""

    async def replayed(msg: Msg, hook: HookRef) -> None:
        ev = _parse_event(msg)
        if ev is not None:
            await _enqueue(ctx, workers, ev, [hook])

    await ctx.subscriptions.reconcile(replayed)
    await workers.reconcile()


async def _nak_all(msgs: Sequence[Msg], delay: float) -> None:
    for m in msgs:
        await settle.give_back(m, delay=delay)


async def _every(period_s: float, stop: asyncio.Event, job: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        try:
            await job()
        except TRANSIENT as e:
            log.warning("webhooks.reconcile_failed", error=str(e).splitlines()[0] if str(e) else repr(e))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)


async def run_notifier(settings: WebhookSettings, js: JetStreamContext,
                       sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event) -> None:
    """Run the fan-out and the endpoint workers until ``stop`` is set, then let in-flight POSTs finish.

    The WEBHOOKS stream must exist (``Topology.apply``)."""
    halt = asyncio.Event()  # ours: a failing stage stops the notifier, not the caller's service
    attempts = AttemptLog(sessions, settings.webhook_log_flush_s, settings.webhook_log_days)
    ctx = Context(settings, js, sessions, EndpointCache(sessions, settings.webhook_cache_ttl_s),
                  Subscriptions(js, sessions, settings.webhook_fanout_max_subjects), halt, attempts)
    workers = Workers(ctx)
    log_done = asyncio.Event()  # set once the workers are done: the log's last flush has every attempt
    log_task = asyncio.create_task(attempts.run(log_done), name="webhook-attempt-log")

    async def follow_stop() -> None:
        await stop.wait()
        halt.set()

    log.info("webhooks.notifier_started")
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(follow_stop())
            tg.create_task(_every(settings.webhook_reconcile_s, halt, lambda: _reconcile(ctx, workers)))
            tg.create_task(_fan_out(ctx, workers))
    finally:
        halt.set()
        await workers.drain()
        log_done.set()
        await log_task
        log.info("webhooks.notifier_stopped")
