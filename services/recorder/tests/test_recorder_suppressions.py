"""Suppressions added by the recorder, against a real NATS server (KV bucket) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import EVENTS
from postwire.db import suppressions
from postwire.db.models import Event, Suppression
from postwire.db.suppressions import SuppressionInfo, SuppressionMirror
from postwire.recorder.recorder import Recorder, SoftBouncePolicy
from postwire.testing.fixtures import eventually
from postwire.v1 import envelope_pb2

Sessions = async_sessionmaker[AsyncSession]
StartRecorder = Callable[..., Awaitable[None]]


@pytest_asyncio.fixture
async def start_recorder(js: JetStreamContext, sessions: Sessions) -> AsyncIterator[StartRecorder]:
    """The recorder with a given soft-bounce policy, in-process; stopped at teardown."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start(policy: SoftBouncePolicy | None = None) -> None:
        recorder = Recorder(js, sessions, retry_s=0.1, policy=policy or SoftBouncePolicy())
        tasks.append(asyncio.create_task(recorder.run(stop)))

    yield start
    stop.set()
    await asyncio.gather(*tasks)


async def _row(sessions: Sessions, account: str, address: str) -> SuppressionInfo | None:
    async with sessions() as s:
        return await suppressions.get(s, account, address)


async def _drained(js: JetStreamContext) -> bool:
    try:
        info = await js.consumer_info(EVENTS, "recorder")
    except NotFoundError:
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0


def _failure(account: str, rcpt: str, *, hard: bool, reason: str, kind: str = "failed",
             **fields: Any) -> envelope_pb2.Event:
    return make_event(kind, account_id=account, message_id=new_message_id(), recipient=rcpt, attempt=1,
                      smtp_code=550 if hard else 452, reason=reason, hardbounce=hard, **fields)


async def test_hard_failure_suppresses_in_db_and_kv_once(js: JetStreamContext, sessions: Sessions,
                                                         start_recorder: StartRecorder) -> None:
    await start_recorder()
    account, rcpt = new_id("a"), "Gone@Example.test"
    ev = _failure(account, rcpt, hard=True, reason="userunknown", enhanced_status="5.1.1")
    await publish_event(js, ev)
    row = await eventually(lambda: _row(sessions, account, rcpt))
    assert (row.address, row.reason, row.source, row.source_event_id, row.expires_at) == (
        "gone@example.test", "userunknown", "bounce", ev.event_id, None)
    entry = await eventually(lambda: SuppressionMirror(js).lookup(account, "gone@example.test"))
    assert (entry.reason, entry.address) == ("userunknown", "gone@example.test")

    # redelivered with another Nats-Msg-Id: stored once, the suppression untouched
    await js.publish(f"events.{account}.failed", ev.SerializeToString(), headers={"Nats-Msg-Id": "again"})
    await eventually(lambda: _drained(js))
    async with sessions() as s:
        stored = select(func.count()).select_from(Event).where(Event.event_id == ev.event_id)
        assert await s.scalar(stored) == 1
        assert await s.scalar(select(func.count()).select_from(Suppression)
                              .where(Suppression.account_id == account)) == 1
    assert await _row(sessions, account, rcpt) == row


async def test_redelivery_restores_a_lost_kv_entry(js: JetStreamContext, sessions: Sessions,
                                                   start_recorder: StartRecorder) -> None:
    """The KV put after the commit failed (simulated by deleting the entry): the redelivered event,
    though a duplicate, puts it back."""
    await start_recorder()
    account, rcpt = new_id("a"), "lost@example.test"
    ev = _failure(account, rcpt, hard=True, reason="userunknown")
    await publish_event(js, ev)
    mirror = SuppressionMirror(js)
    await eventually(lambda: mirror.lookup(account, rcpt))
    await mirror.delete(account, rcpt)
    await js.publish(f"events.{account}.failed", ev.SerializeToString(), headers={"Nats-Msg-Id": "again"})
    assert (await eventually(lambda: mirror.lookup(account, rcpt))).reason == "userunknown"


async def test_soft_failures_do_not_suppress_when_the_policy_is_off(
        js: JetStreamContext, sessions: Sessions, start_recorder: StartRecorder) -> None:
    await start_recorder(SoftBouncePolicy(limit=0))
    account, rcpt = new_id("a"), "full@example.test"
    for _ in range(3):
        await publish_event(js, _failure(account, rcpt, hard=False, reason="mailboxfull"))
    await eventually(lambda: _drained(js))
    assert await _row(sessions, account, rcpt) is None
    assert await SuppressionMirror(js).lookup(account, rcpt) is None


async def test_soft_policy_suppresses_at_the_limit_with_an_expiry(
        js: JetStreamContext, sessions: Sessions, start_recorder: StartRecorder) -> None:
    await start_recorder(SoftBouncePolicy(limit=3, window_s=3600, suppress_s=600))
    account, rcpt = new_id("a"), "full@example.test"
    await publish_event(js, _failure(account, rcpt, hard=False, reason="mailboxfull"))
    await publish_event(js, _failure(account, rcpt, hard=False, reason="mailboxfull", kind="bounced"))
    # deferrals and other addresses do not count
    await publish_event(js, _failure(account, rcpt, hard=False, reason="mailboxfull", kind="deferred"))
    await publish_event(js, _failure(account, "other@example.test", hard=False, reason="mailboxfull"))
    await eventually(lambda: _drained(js))
    assert await _row(sessions, account, rcpt) is None

    third = _failure(account, rcpt, hard=False, reason="mailboxfull")
    await publish_event(js, third)
    row = await eventually(lambda: _row(sessions, account, rcpt))
    assert (row.source, row.reason, row.source_event_id) == ("soft_bounce_policy", "mailboxfull",
                                                             third.event_id)
    assert row.expires_at is not None
    assert 590 < (row.expires_at - row.created_at).total_seconds() < 610
    assert await eventually(lambda: SuppressionMirror(js).lookup(account, rcpt))


async def test_a_complaint_suppresses(js: JetStreamContext, sessions: Sessions,
                                      start_recorder: StartRecorder) -> None:
    await start_recorder()
    account, rcpt = new_id("a"), "angry@example.test"
    ev = make_event("complained", account_id=account, message_id=new_message_id(), recipient=rcpt,
                    feedback_type="abuse")
    await publish_event(js, ev)
    row = await eventually(lambda: _row(sessions, account, rcpt))
    assert (row.reason, row.source, row.source_event_id) == ("complaint", "complaint", ev.event_id)
    assert (await eventually(lambda: SuppressionMirror(js).lookup(account, rcpt))).reason == "complaint"


async def test_the_policy_never_weakens_a_hard_suppression(
        js: JetStreamContext, sessions: Sessions, start_recorder: StartRecorder) -> None:
    await start_recorder(SoftBouncePolicy(limit=1))
    account, rcpt = new_id("a"), "x@example.test"
    await publish_event(js, _failure(account, rcpt, hard=True, reason="userunknown", kind="bounced"))
    first = await eventually(lambda: _row(sessions, account, rcpt))
    await publish_event(js, _failure(account, rcpt, hard=False, reason="mailboxfull"))
    await eventually(lambda: _drained(js))
    assert await _row(sessions, account, rcpt) == first


async def test_boot_reconciliation_restores_missing_entries(js: JetStreamContext, sessions: Sessions,
                                                            start_recorder: StartRecorder) -> None:
    """A row committed without its KV put (a crash in between) is mirrored when a recorder starts."""
    account = new_id("a")
    async with sessions.begin() as s:
        await suppressions.add(s, account, "crash@example.test", "manual", "manual")
    mirror = SuppressionMirror(js)
    assert await mirror.lookup(account, "crash@example.test") is None
    await start_recorder()
    assert (await eventually(lambda: mirror.lookup(account, "crash@example.test"))).reason == "manual"
