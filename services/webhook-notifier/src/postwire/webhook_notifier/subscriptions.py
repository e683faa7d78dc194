"""Which events the fan-out reads: only those of the accounts and event types that have webhooks.

Every event of every account used to reach the fan-out, which looked up the account's webhooks and,
for most, found none: a delivery and an ack per event in nats-server and in this process for nothing.
The fan-out's consumer is now filtered to the EVENTS subjects ``events.<account>.<type>`` some webhook
wants (``events.<account>.>`` where one wants every type), kept in step with the webhooks table at
every reconcile (docs/webhooks.md).

A filter is only read forward: events stored before a subject joined it may have been skipped. So when
a webhook's subject joins, the events of that subject since the webhook was created are read once more
from EVENTS (replayed) for that webhook; the deliveries carry the same ids as live ones
(``<event>:<webhook>``), so an event both replayed and read live within WEBHOOKS' duplicate window is
posted once. The replay is
done before the filter changes and again for the few events stored while it changed, so a crash
between the two loses at most those.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.topology import EVENTS, event_subject, work_consumer
from postwire.db import webhooks as store

log = structlog.get_logger(__name__)

FANOUT_CONSUMER = "webhooks"
EVERYTHING = "events.>"
NOTHING = "events._._"  # no account id is "_": the filter of a system without webhooks
# events stored around a webhook's creation are replayed from this long before it (clocks of the
# database and of nats-server may differ a little; a webhook getting an event of that second is harmless)
CREATED_MARGIN = timedelta(seconds=2)
# how often a lookup that found no webhook may reload the table: an event can reach a replica whose
# copy of the table is older than the filter another replica set
RELOAD_AFTER_MISS_S = 1.0

Replayed = Callable[[Msg, "HookRef"], Awaitable[None]]


@dataclass(frozen=True)
class HookRef:
    id: str
    account_id: str
    event_types: tuple[str, ...]
    created_at: datetime


def subjects_for(hooks: Iterable[HookRef], max_subjects: int) -> list[str]:
    """The fan-out's filter: per account ``events.<account>.>`` when one of its webhooks takes every
    type, else one subject per type; everything beyond ``max_subjects`` subjects (JetStream keeps the
    filter in the consumer's configuration), nothing without webhooks. Subjects never overlap, as
    JetStream requires."""
    wanted: dict[str, set[str] | None] = {}  # account → its types, None for all
    for h in hooks:
        if not h.event_types:
            wanted[h.account_id] = None
        elif (types := wanted.setdefault(h.account_id, set())) is not None:
            types.update(h.event_types)
    subjects = sorted(event_subject(account, t) for account, types in wanted.items()
                      for t in (sorted(types) if types is not None else (">",)))
    if len(subjects) > max_subjects:
        return [EVERYTHING]
    return subjects or [NOTHING]


def covers(pattern: str, subject: str) -> bool:
    """Whether the NATS subject pattern ``pattern`` takes every message ``subject`` (itself possibly
    ending in ``>``) takes."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or s[i] == ">" or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


class Subscriptions:
    """The webhooks table as the fan-out needs it, and the fan-out consumer's filter kept to match."""

    def __init__(self, js: JetStreamContext, sessions: async_sessionmaker[AsyncSession],
                 max_subjects: int) -> None:
        self._js, self._sessions, self._max = js, sessions, max_subjects
        self._hooks: dict[str, list[HookRef]] = {}
        self._loaded_at = float("-inf")
        self.ready = asyncio.Event()  # the consumer exists with a filter this process chose

    async def hooks_for(self, account_id: str, event_type: str) -> list[HookRef]:
        """The webhooks an event goes to. A miss reloads the table (at most once a second): another
        replica may have let the event in for a webhook created after this one's last reconcile."""
        found = self._matching(account_id, event_type)
        if not found and time.monotonic() - self._loaded_at > RELOAD_AFTER_MISS_S:
            await self._load()
            found = self._matching(account_id, event_type)
        return found

    def _matching(self, account_id: str, event_type: str) -> list[HookRef]:
        return [h for h in self._hooks.get(account_id, ()) if store.matches(h.event_types, event_type)]

    async def _load(self) -> list[HookRef]:
        async with self._sessions() as s:
            rows = await store.all_active_webhooks(s)
        hooks = [HookRef(r.id, r.account_id, tuple(r.event_types or ()), r.created_at) for r in rows]
        by_account: dict[str, list[HookRef]] = {}
        for h in hooks:
            by_account.setdefault(h.account_id, []).append(h)
        self._hooks, self._loaded_at = by_account, time.monotonic()
        return hooks

    async def reconcile(self, replayed: Replayed) -> None:
        """Set the filter from the table; replay to each webhook what its new subjects may have missed."""
        hooks = await self._load()
        wanted = subjects_for(hooks, self._max)
        current = await self._current_filter()
        if current is not None and sorted(current) == wanted:
            self.ready.set()
            return
        joining = [] if current is None else [
            (h, s) for h in hooks for s in hook_subjects(h) if not any(covers(c, s) for c in current)]
        upto = await self._last_seq()
        for hook, subject in joining:
            await self._replay(hook, subject, upto, replayed, since=hook.created_at - CREATED_MARGIN)
        await self._js.add_consumer(EVENTS, _fanout_config(wanted))
        after = await self._last_seq()
        for hook, subject in joining:
            await self._replay(hook, subject, after, replayed, start_seq=upto + 1)
        log.info("webhooks.fanout_filter", subjects=len(wanted), joined=sorted({s for _, s in joining}))
        self.ready.set()

    async def _current_filter(self) -> list[str] | None:
        """The consumer's filter now; None when there is no consumer yet (a new one reads EVENTS from
        its start, so nothing needs replaying)."""
        try:
            info = await self._js.consumer_info(EVENTS, FANOUT_CONSUMER)
        except NotFoundError:
            return None
        cfg = info.config
        if cfg.filter_subjects:
            return list(cfg.filter_subjects)
        return [cfg.filter_subject or EVERYTHING]

    async def _last_seq(self) -> int:
        return int((await self._js.stream_info(EVENTS)).state.last_seq)

    async def _replay(self, hook: HookRef, subject: str, upto: int, replayed: Replayed, *,
                      since: datetime | None = None, start_seq: int = 0) -> None:
        """Hand ``replayed`` every event of ``subject`` for ``hook``, from ``since`` (or stream sequence
        ``start_seq``) up to sequence ``upto``, read through a consumer of its own that is gone after."""
        if since is None and start_seq > upto:
            return
        cfg = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_time=since.astimezone(UTC) if since else None,
            opt_start_seq=None if since else start_seq,
            ack_policy=AckPolicy.NONE, filter_subject=subject, inactive_threshold=60.0)
        sub = await self._js.pull_subscribe(subject, stream=EVENTS, config=cfg)
        count = 0
        try:
            pending = (await sub.consumer_info()).num_pending
            while pending:
                for msg in await sub.fetch(min(pending, 256), timeout=5):
                    meta = msg.metadata
                    if meta.sequence.stream > upto:
                        return
                    await replayed(msg, hook)
                    count += 1
                    pending = meta.num_pending
        finally:
            await sub.unsubscribe()
            if count:
                log.info("webhooks.replayed", webhook_id=hook.id, subject=subject, events=count)


def hook_subjects(hook: HookRef) -> list[str]:
    """The EVENTS subjects one webhook wants."""
    return [event_subject(hook.account_id, t) for t in hook.event_types or (">",)]


def _fanout_config(subjects: Sequence[str]) -> ConsumerConfig:
    cfg = work_consumer(FANOUT_CONSUMER, ack_wait_s=60)
    cfg.filter_subjects = list(subjects)
    return cfg
