"""The recorder: writes every event from EVENTS to PostgreSQL, idempotently, and keeps each
recipient's latest state so GET /v1/messages/{id} can answer.

At least once in, exactly once stored: events are inserted with ON CONFLICT DO NOTHING on their
stable event id, and a batch is acked only after its transaction committed. While the database is
down, nothing is acked, so JetStream keeps every event until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy import or_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce.metrics import BATCH_FAILURES, BATCH_SECONDS, EVENTS_RECORDED
from postwire.core.topology import EVENTS, ensure_consumer, work_consumer
from postwire.db.models import Event, Message, Recipient
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

CONSUMER = "recorder"
FINAL = ("delivered", "failed")
STATUS_OF = {"deferred": "deferred", "delivered": "delivered", "failed": "failed"}


def event_data(ev: envelope_pb2.Event) -> dict[str, Any]:
    """The event's details as stored in events.data (and later served by the events API)."""
    data: dict[str, Any] = {
        "attempt": ev.attempt, "tags": list(ev.tags), "metadata": dict(ev.metadata),
    }
    for name in ("smtp_code", "enhanced_status", "response", "mx_host",
                 "mail_from", "subject", "size", "source"):
        value = getattr(ev, name)
        if value:
            data[name] = value
    return data


async def _record(session: AsyncSession, ev: envelope_pb2.Event) -> None:
    at = ev.at.ToDatetime(tzinfo=UTC)
    inserted = await session.execute(insert(Event).values(
        event_id=ev.event_id, account_id=ev.account_id, message_id=ev.message_id, recipient=ev.recipient,
        type=ev.type, at=at, data=event_data(ev),
    ).on_conflict_do_nothing())
    if inserted.rowcount == 0:  # type: ignore[attr-defined]
        return  # seen before: its effects are already applied
    if ev.type == "accepted":
        await _record_accepted(session, ev, at)
    elif ev.type in STATUS_OF:
        await _record_outcome(session, ev, at)


async def _record_accepted(session: AsyncSession, ev: envelope_pb2.Event, at: datetime) -> None:
    await session.execute(insert(Message).values(
        id=ev.message_id, account_id=ev.account_id, mail_from=ev.mail_from, subject=ev.subject,
        size=ev.size, source=ev.source, tags=list(ev.tags), metadata_=dict(ev.metadata), created_at=at,
    ).on_conflict_do_nothing())
    await session.execute(insert(Recipient).values(
        message_id=ev.message_id, address=ev.recipient, account_id=ev.account_id, status="queued",
        attempts=0, updated_at=at,
    ).on_conflict_do_nothing())


async def _record_outcome(session: AsyncSession, ev: envelope_pb2.Event, at: datetime) -> None:
    """One delivery attempt's outcome: count it and move the recipient's state forward."""
    row = {
        "status": STATUS_OF[ev.type], "smtp_code": ev.smtp_code or None,
        "enhanced_status": ev.enhanced_status or None, "response": ev.response or None,
        "mx_host": ev.mx_host or None, "updated_at": at,
    }
    stmt = insert(Recipient).values(message_id=ev.message_id, address=ev.recipient,
                                    account_id=ev.account_id, attempts=1, **row)
    # A final state is never replaced by a late deferral; a newer event replaces an older one.
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[Recipient.message_id, Recipient.address],
        set_={**{k: stmt.excluded[k] for k in row}, "attempts": Recipient.attempts + 1},
        where=or_(Recipient.status.not_in(FINAL), stmt.excluded.status.in_(FINAL))
        & (Recipient.updated_at <= stmt.excluded.updated_at),
    ))


async def record_batch(sessions: async_sessionmaker[AsyncSession],
                       events: Sequence[envelope_pb2.Event]) -> None:
    """Store ``events`` in one transaction (in stream order, so state moves forward)."""
    async with sessions.begin() as session:
        for ev in events:
            await _record(session, ev)


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
                 batch: int = 256, retry_s: float = 2.0) -> None:
        self._js, self._sessions, self._batch, self._retry_s = js, sessions, batch, retry_s

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(self._js, EVENTS, work_consumer(CONSUMER, ack_wait_s=60))
        sub = await self._js.pull_subscribe_bind(durable=CONSUMER, stream=EVENTS)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(self._batch, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as e:
                log.warning("recorder.fetch_failed", error=str(e))
                await asyncio.sleep(self._retry_s)
                continue
            await self._handle(msgs)

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        events, poison = _decode(msgs)
        for m in poison:
            log.error("recorder.poison_event", subject=m.subject)
            await m.term()
        try:
            with BATCH_SECONDS.time():
                await record_batch(self._sessions, events)
        except (OperationalError, DBAPIError, OSError) as e:
            BATCH_FAILURES.inc()
            log.warning("recorder.db_unavailable", error=str(e).splitlines()[0], events=len(events))
            for m in msgs:
                if m not in poison:
                    with contextlib.suppress(nats.errors.Error):
                        await m.nak(delay=self._retry_s)
            return
        for ev in events:
            EVENTS_RECORDED.labels(ev.type).inc()
        for m in msgs:
            if m not in poison:
                await m.ack()
