"""The recorder: writes every event from EVENTS to PostgreSQL, idempotently, and keeps each
recipient's latest state so GET /v1/messages/{id} can answer.

At least once in, exactly once stored: events are inserted with ON CONFLICT DO NOTHING on their
stable event id, and a batch is acked only after its transaction committed. While the database is
down, nothing is acked, so JetStream keeps every event until it is back. A batch (up to
POSTWIRE_RECORDER_BATCH events) costs a handful of set-based statements (unnest of arrays), not a few
per event: the messages of its ``accepted`` events, the events, the new recipients, and the recipients'
outcomes, in that order. The messages go first because the events' triggers count each event under its
message's sending domain (event_counts, migration 0011), looking the message up as the events are
inserted: an event whose message is not there yet costs its trigger a lock on the message id, and is
counted under its domain only when the message comes, by the messages' trigger.

Suppressions (docs/suppressions.md) are added in the same transaction as the event that causes them: a
hard failure or bounce, a complaint, or — when POSTWIRE_SOFT_BOUNCE_LIMIT is set — the N-th soft one
within the window. The KV mirror is written after the commit; if that fails the batch is nak'd, and the
redelivered events, now duplicates, put their suppressions into the bucket again.

Opens, clicks and unsubscribes (``opened``, ``clicked``, ``unsubscribed``) are stored with their details
and nothing else: they never move a recipient's delivery state (a click does not make a failed recipient
delivered), the recorder adds no suppression for them (the api-gateway writes an unsubscribe's itself,
docs/unsubscribe.md), and one for a message not recorded (yet) is stored like any other event.

``on_recorded`` (bounce forwarding) is told, after each commit, of the events stored for the first time:
a redelivered event is a duplicate and is not passed on again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import NonNegativeInt, PositiveFloat
from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core import settle
from postwire.core.pull import BatchPull
from postwire.core.settings import PostwireSettings
from postwire.core.topology import EVENTS, ensure_consumer, work_consumer
from postwire.db import suppressions
from postwire.db.events_query import event_proto_data
from postwire.db.models import Event
from postwire.db.suppressions import MirrorUnavailable, SuppressionInfo, SuppressionMirror
from postwire.recorder.metrics import BATCH_FAILURES, BATCH_SECONDS, EVENTS_RECORDED
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

CONSUMER = "recorder"
FINAL = ("delivered", "failed", "bounced", "suppressed")
STATUS_OF = {"deferred": "deferred", "delivered": "delivered", "failed": "failed", "bounced": "bounced",
             "suppressed": "suppressed"}
# outcomes that are a delivery attempt (a suppression or a later bounce is not)
ATTEMPTS = ("deferred", "delivered", "failed")
# failures that may suppress: hard ones at once, soft ones under the policy
FAILURES = ("failed", "bounced")
DAY = 24 * 3600.0

OnRecorded = Callable[[Sequence[envelope_pb2.Event]], None]


class SuppressionSettings(PostwireSettings):
    """The soft-bounce policy (POSTWIRE_SOFT_BOUNCE_*); read by the recorder when it is not given one."""

    # soft failures/bounces of one address (distinct messages) within the window that suppress it; 0 = off
    soft_bounce_limit: NonNegativeInt = 0
    soft_bounce_window_s: PositiveFloat = 7 * DAY
    # how long such a suppression lasts
    soft_bounce_suppress_s: PositiveFloat = 30 * DAY


@dataclass(frozen=True)
class SoftBouncePolicy:
    limit: int = 0
    window_s: float = 7 * DAY
    suppress_s: float = 30 * DAY

    @classmethod
    def from_settings(cls, settings: SuppressionSettings) -> SoftBouncePolicy:
        return cls(settings.soft_bounce_limit, settings.soft_bounce_window_s, settings.soft_bounce_suppress_s)


def event_data(ev: envelope_pb2.Event) -> dict[str, Any]:
    """The event's details as stored in events.data (and later served by the events API): what
    ``postwire.db.events_query.event_proto_data`` gives, the webhook payload being built from it too (it
    keeps ``hardbounce`` explicit for failures, which the soft-bounce policy counts on, and the RFC 3461
    parameters of an ``accepted`` event, which bounce forwarding reads back), without NUL characters."""
    cleaned: dict[str, Any] = _without_nul(event_proto_data(ev))
    return cleaned


def _without_nul(value: Any) -> Any:
    """PostgreSQL refuses U+0000 in jsonb: one in a user agent or a link would fail every retry of its
    batch and hold up the recorder, so it is dropped."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


# Set-based statements: one per kind of write for a whole batch, whatever its size, so the cost per event
# is a few array elements rather than a statement (and a round trip) of its own. WITH ORDINALITY keeps
# the stream's order for the events' ``seq`` (the events API pages by it).
_INSERT_EVENTS = text("""
INSERT INTO events (event_id, account_id, message_id, recipient, type, at, data)
SELECT e.event_id, e.account_id, e.message_id, e.recipient, e.type, e.at, e.data::jsonb
FROM unnest(CAST(:event_id AS text[]), CAST(:account_id AS text[]), CAST(:message_id AS text[]),
            CAST(:recipient AS text[]), CAST(:type AS text[]), CAST(:at AS timestamptz[]),
            CAST(:data AS text[])) WITH ORDINALITY
     AS e(event_id, account_id, message_id, recipient, type, at, data, ord)
ORDER BY e.ord
ON CONFLICT DO NOTHING
RETURNING event_id
""")
_INSERT_MESSAGES = text("""
INSERT INTO messages (id, account_id, mail_from, subject, size, source, tags, metadata, template_id,
                      created_at)
SELECT m.id, m.account_id, m.mail_from, m.subject, m.size, m.source, m.tags::jsonb, m.metadata::jsonb,
       m.template_id, m.at
FROM unnest(CAST(:id AS text[]), CAST(:account_id AS text[]), CAST(:mail_from AS text[]),
            CAST(:subject AS text[]), CAST(:size AS bigint[]), CAST(:source AS text[]),
            CAST(:tags AS text[]), CAST(:metadata AS text[]), CAST(:template_id AS bigint[]),
            CAST(:at AS timestamptz[]))
     AS m(id, account_id, mail_from, subject, size, source, tags, metadata, template_id, at)
ON CONFLICT DO NOTHING
""")
_INSERT_QUEUED = text("""
INSERT INTO recipients (message_id, address, account_id, status, attempts, updated_at)
SELECT r.message_id, r.address, r.account_id, 'queued', 0, r.at
FROM unnest(CAST(:message_id AS text[]), CAST(:address AS text[]), CAST(:account_id AS text[]),
            CAST(:at AS timestamptz[])) AS r(message_id, address, account_id, at)
ON CONFLICT DO NOTHING
""")
# A final state is never replaced by a late deferral; a newer event replaces an older one; an attempt is
# counted only when its event moves the state (as the row shows it).
_UPSERT_OUTCOMES = text(f"""
INSERT INTO recipients AS r (message_id, address, account_id, status, smtp_code, enhanced_status,
                             response, mx_host, updated_at, attempts)
SELECT o.message_id, o.address, o.account_id, o.status, o.smtp_code, o.enhanced_status, o.response,
       o.mx_host, o.at, o.attempts
FROM unnest(CAST(:message_id AS text[]), CAST(:address AS text[]), CAST(:account_id AS text[]),
            CAST(:status AS text[]), CAST(:smtp_code AS integer[]), CAST(:enhanced_status AS text[]),
            CAST(:response AS text[]), CAST(:mx_host AS text[]), CAST(:at AS timestamptz[]),
            CAST(:attempts AS integer[]))
     AS o(message_id, address, account_id, status, smtp_code, enhanced_status, response, mx_host, at,
          attempts)
ON CONFLICT (message_id, address) DO UPDATE SET
    status = excluded.status, smtp_code = excluded.smtp_code, enhanced_status = excluded.enhanced_status,
    response = excluded.response, mx_host = excluded.mx_host, updated_at = excluded.updated_at,
    attempts = r.attempts + excluded.attempts
WHERE (r.status NOT IN ({", ".join(f"'{s}'" for s in FINAL)}) OR excluded.status IN
       ({", ".join(f"'{s}'" for s in FINAL)}))
  AND r.updated_at <= excluded.updated_at
""")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as one array per column: the parameters of an unnest() statement."""
    return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}


async def _insert_events(session: AsyncSession, events: Sequence[envelope_pb2.Event],
                         at: Sequence[datetime]) -> set[str]:
    """Insert every event not stored before; the ids of those that were new."""
    rows = [{"event_id": ev.event_id, "account_id": ev.account_id, "message_id": ev.message_id,
             "recipient": ev.recipient, "type": ev.type, "at": when, "data": _json(event_data(ev))}
            for ev, when in zip(events, at, strict=True)]
    result = await session.execute(_INSERT_EVENTS, _columns(rows))
    return {row[0] for row in result}


async def _insert_messages(session: AsyncSession, accepted: Sequence[tuple[envelope_pb2.Event, datetime]],
                           ) -> None:
    """The message rows of these ``accepted`` events (with the stored template the message was built
    from, NULL for none), from the first event of each message; a message stored already is kept as it
    is, so the accepted events of a redelivery, stored already too, change nothing. In id order: two
    recorders given the same messages (a redelivery) wait for each other rather than deadlock."""
    if not accepted:
        return
    messages = {ev.message_id: {
        "id": ev.message_id, "account_id": ev.account_id, "mail_from": ev.mail_from, "subject": ev.subject,
        "size": ev.size, "source": ev.source, "tags": _json(list(ev.tags)),
        "metadata": _json(dict(ev.metadata)), "template_id": ev.template_id or None, "at": at}
        for ev, at in reversed(accepted)}
    await session.execute(_INSERT_MESSAGES, _columns([messages[mid] for mid in sorted(messages)]))


async def _insert_queued(session: AsyncSession, accepted: Sequence[tuple[envelope_pb2.Event, datetime]],
                         ) -> None:
    """The recipients of newly stored ``accepted`` events as ``queued`` (kept when a state is there
    already)."""
    if not accepted:
        return
    await session.execute(_INSERT_QUEUED, _columns([
        {"message_id": ev.message_id, "address": ev.recipient, "account_id": ev.account_id, "at": at}
        for ev, at in accepted]))


async def _record_outcomes(session: AsyncSession, outcomes: Sequence[tuple[envelope_pb2.Event, datetime]],
                           ) -> None:
    """Each delivery outcome moves its recipient's state forward. One statement may touch a row once, so
    several outcomes of one recipient in a batch go in rounds, in stream order."""
    rounds: list[list[dict[str, Any]]] = []
    seen: dict[tuple[str, str], int] = {}
    for ev, at in outcomes:
        key = (ev.message_id, ev.recipient)
        n = seen[key] = seen.get(key, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append({
            "message_id": ev.message_id, "address": ev.recipient, "account_id": ev.account_id,
            "status": STATUS_OF[ev.type], "smtp_code": ev.smtp_code or None,
            "enhanced_status": ev.enhanced_status or None, "response": ev.response or None,
            "mx_host": ev.mx_host or None, "at": at, "attempts": int(ev.type in ATTEMPTS)})
    for rows in rounds:
        await session.execute(_UPSERT_OUTCOMES, _columns(rows))


def _suppresses(ev: envelope_pb2.Event, policy: SoftBouncePolicy) -> bool:
    """Whether ``ev`` can add a suppression (cheap, no I/O)."""
    return ev.type == "complained" or (ev.type in FAILURES and (ev.hardbounce or policy.limit > 0))


async def _suppress(session: AsyncSession, ev: envelope_pb2.Event, at: datetime,
                    policy: SoftBouncePolicy) -> SuppressionInfo | None:
    """Hard failure or bounce → permanent; complaint → permanent; soft → the policy decides."""
    if not ev.recipient or not _suppresses(ev, policy):
        return None
    if ev.type == "complained":
        return await suppressions.add(session, ev.account_id, ev.recipient, "complaint", "complaint",
                                      source_event_id=ev.event_id)
    if ev.hardbounce:
        return await suppressions.add(session, ev.account_id, ev.recipient, ev.reason or "undefined",
                                      "bounce", source_event_id=ev.event_id)
    if await _soft_failures(session, ev, at - timedelta(seconds=policy.window_s)) < policy.limit:
        return None
    expires = datetime.now(UTC) + timedelta(seconds=policy.suppress_s)
    return await suppressions.add(session, ev.account_id, ev.recipient, ev.reason or "undefined",
                                  suppressions.SOFT, source_event_id=ev.event_id, expires_at=expires)


async def _soft_failures(session: AsyncSession, ev: envelope_pb2.Event, since: datetime) -> int:
    """Distinct messages with a soft failure or bounce for this recipient since ``since`` (this event
    included: it is in the same transaction). Runs only for soft events, on ix_events_account_recipient_at;
    counting messages, not events, so one message's failure and its DSN count once."""
    hard = Event.data["hardbounce"].as_boolean()
    return int(await session.scalar(
        select(func.count(func.distinct(Event.message_id))).where(
            Event.account_id == ev.account_id, Event.recipient == ev.recipient, Event.at >= since,
            Event.type.in_(FAILURES), or_(hard.is_(None), hard.is_(False)))) or 0)


async def _remirror(session: AsyncSession, ev: envelope_pb2.Event, mirror: list[SuppressionInfo]) -> None:
    current = await suppressions.get(session, ev.account_id, ev.recipient)
    if current is not None:
        mirror.append(current)


@dataclass
class Recorded:
    """What one committed batch did: suppressions to mirror into the KV bucket, events stored anew."""

    mirror: list[SuppressionInfo] = field(default_factory=list)
    new: list[envelope_pb2.Event] = field(default_factory=list)


async def record_batch(sessions: async_sessionmaker[AsyncSession], events: Sequence[envelope_pb2.Event],
                       policy: SoftBouncePolicy = SoftBouncePolicy()) -> Recorded:
    """Store ``events`` in one transaction, in stream order, with a few statements for the whole batch;
    returns, once the transaction has committed, the suppressions to mirror into the KV bucket and the
    events that were not stored before.

    The messages of the batch's ``accepted`` events are inserted before the events, so that the events'
    triggers find each event's sending domain (its message's) while counting it; the messages of
    redelivered events are there already and stay as they are.

    An event seen before (a redelivery) has its effects applied already and is skipped, except that a
    suppression it caused is mirrored again: its KV put may be what failed the first time."""
    done = Recorded()
    if not events:
        return done
    at = [ev.at.ToDatetime(tzinfo=UTC) for ev in events]
    async with sessions.begin() as session:
        await _insert_messages(session, [(ev, when) for ev, when in zip(events, at, strict=True)
                                         if ev.type == "accepted"])
        new_ids = await _insert_events(session, events, at)
        fresh: list[tuple[envelope_pb2.Event, datetime]] = []
        for ev, when in zip(events, at, strict=True):
            if ev.event_id in new_ids:
                new_ids.discard(ev.event_id)  # a second copy in the same batch is a duplicate
                fresh.append((ev, when))
                done.new.append(ev)
            elif _suppresses(ev, policy):
                await _remirror(session, ev, done.mirror)
        await _insert_queued(session, [(ev, when) for ev, when in fresh if ev.type == "accepted"])
        await _record_outcomes(session, [(ev, when) for ev, when in fresh if ev.type in STATUS_OF])
        for ev, when in fresh:
            if _suppresses(ev, policy) and (added := await _suppress(session, ev, when, policy)) is not None:
                done.mirror.append(added)
    return done


def _decode(msgs: Sequence[Msg]) -> tuple[list[envelope_pb2.Event], list[Msg]]:
    events, poison = [], []
    for m in msgs:
        ev = envelope_pb2.Event()
        try:
            ev.ParseFromString(m.data)
        except Exception:  # a payload that is not an Event can never be stored: drop it, loudly
            poison.append(m)
            continue
        events.append(ev)
    return events, poison


class Recorder:
    def __init__(self, js: JetStreamContext, sessions: async_sessionmaker[AsyncSession],
                 batch: int = 256, retry_s: float = 2.0, policy: SoftBouncePolicy | None = None,
                 on_recorded: OnRecorded | None = None, linger_s: float = 0.02) -> None:
        self._js, self._sessions, self._batch, self._retry_s = js, sessions, batch, retry_s
        self._linger_s = linger_s
        self._policy = policy if policy is not None else SoftBouncePolicy.from_settings(SuppressionSettings())
        self._mirror = SuppressionMirror(js)
        self._on_recorded = on_recorded

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(self._js, EVENTS, work_consumer(CONSUMER, ack_wait_s=60))
        reconciling = asyncio.create_task(self._reconcile())
        try:
            await self._consume(stop)
        finally:
            reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciling

    async def _reconcile(self) -> None:
        """Restore KV entries whose put was lost (a crash between commit and put); at start, beside
        consuming, so a large list does not hold up events."""
        try:
            restored = await suppressions.reconcile(self._sessions, self._mirror)
        except (MirrorUnavailable, OperationalError, DBAPIError, OSError) as e:
            log.warning("recorder.reconcile_failed", error=str(e).splitlines()[0] if str(e) else repr(e))
            return
        log.info("recorder.reconciled", restored=restored)

    async def _consume(self, stop: asyncio.Event) -> None:
        """Events in batches from a standing pull request. A batch less than half full waits
        ``linger_s`` once for more before it is committed, so under load a transaction (and its round
        trips) carries many events; events are recorded at most that much later."""
        pull = BatchPull(self._js, EVENTS, CONSUMER, batch=self._batch)
        await pull.start()
        try:
            while not stop.is_set():
                msgs = await pull.next(timeout_s=1.0, linger_s=self._linger_s)
                if msgs:
                    await self._handle(msgs)
        finally:
            await pull.close()

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        events, poison = _decode(msgs)
        for m in poison:
            log.error("recorder.poison_event", subject=m.subject)
            await settle.term(m)
        try:
            with BATCH_SECONDS.time():
                done = await record_batch(self._sessions, events, self._policy)
        except (OperationalError, DBAPIError, OSError) as e:
            BATCH_FAILURES.inc()
            log.warning("recorder.db_unavailable", error=str(e).splitlines()[0], events=len(events))
            await self._nak([m for m in msgs if m not in poison])
            return
        # committed: tell the hook now, since a redelivery after a failed KV put finds only duplicates
        if self._on_recorded is not None and done.new:
            try:
                self._on_recorded(done.new)
            except Exception:  # a side effect's bug must not stop recording
                log.exception("recorder.on_recorded_failed", events=len(done.new))
        mirror = done.mirror
        try:
            for info in mirror:
                await self._mirror.put(info)
        except MirrorUnavailable as e:  # committed; the redelivery mirrors again (see _record)
            log.warning("recorder.kv_put_failed", error=str(e), suppressions=len(mirror))
            await self._nak([m for m in msgs if m not in poison])
            return
        for info in mirror:
            log.info("recorder.suppressed", account_id=info.account_id, reason=info.reason,
                     source=info.source)
        for ev in events:
            EVENTS_RECORDED.labels(ev.type).inc()
        # an ack that cannot be sent (NATS failing over) is not retried: the events come back after
        # ack_wait and are found stored already (postwire.core.settle)
        for m in msgs:
            if m not in poison:
                await settle.ack(m)

    async def _nak(self, msgs: Sequence[Msg]) -> None:
        for m in msgs:
            await settle.nak(m, delay=self._retry_s)
