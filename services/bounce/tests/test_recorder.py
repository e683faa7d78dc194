"""The recorder against a real NATS server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from nats.js.errors import NotFoundError
from sqlalchemy import func, select

from postwire.bounce.service import serve
from postwire.bounce.settings import BounceSettings
from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import EVENTS
from postwire.db.models import Event, Message, Recipient
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer


@pytest_asyncio.fixture
async def recorder(nats_server: NatsServer, pg_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    settings = BounceSettings(nats_url=nats_server.url, database_url=pg_url, recorder_retry_s=0.1)
    task = asyncio.create_task(serve(settings, stop))
    yield
    stop.set()
    await task


async def _recipient(sessions, mid: str, rcpt: str) -> Recipient | None:
    async with sessions() as s:
        return await s.get(Recipient, (mid, rcpt))


async def test_accepted_then_delivered_gives_message_and_final_state(js, recorder, sessions) -> None:
    account, mid, rcpt = new_id("a"), new_message_id(), "rcpt@example.test"
    await publish_event(js, make_event("accepted", account_id=account, message_id=mid, recipient=rcpt,
                                       mail_from="from@example.test", subject="Hello", size=123,
                                       source="api"))
    await publish_event(js, make_event("deferred", account_id=account, message_id=mid, recipient=rcpt,
                                       attempt=1, smtp_code=451, response="4.3.0 try later"))
    await publish_event(js, make_event("delivered", account_id=account, message_id=mid, recipient=rcpt,
                                       attempt=2, smtp_code=250, enhanced_status="2.0.0",
                                       response="Ok: queued as X", mx_host="mx.example.test"))
    row = await eventually(lambda: _final(sessions, mid, rcpt))
    assert (row.status, row.smtp_code, row.mx_host, row.attempts) == ("delivered", 250, "mx.example.test", 2)
    async with sessions() as s:
        msg = await s.get(Message, mid)
        assert msg is not None and (msg.subject, msg.account_id, msg.size) == ("Hello", account, 123)


async def _final(sessions, mid: str, rcpt: str) -> Recipient | None:
    row = await _recipient(sessions, mid, rcpt)
    return row if row is not None and row.status == "delivered" else None


async def test_late_deferral_does_not_undo_a_final_state(js, recorder, sessions) -> None:
    account, mid, rcpt = new_id("a"), new_message_id(), "late@example.test"
    delivered = make_event("delivered", account_id=account, message_id=mid, recipient=rcpt, attempt=1,
                           smtp_code=250)
    deferred = make_event("deferred", account_id=account, message_id=mid, recipient=rcpt, attempt=1,
                          smtp_code=421)
    deferred.at.CopyFrom(delivered.at)
    await publish_event(js, delivered)
    await publish_event(js, deferred)
    marker = make_event("accepted", account_id=account, message_id=new_message_id(), recipient=rcpt)
    await publish_event(js, marker)
    await eventually(lambda: _recipient(sessions, marker.message_id, rcpt))
    row = await _recipient(sessions, mid, rcpt)
    assert row is not None and row.status == "delivered"


async def test_a_redelivered_event_is_stored_once(js, recorder, sessions) -> None:
    account, mid = new_id("a"), new_message_id()
    ev = make_event("accepted", account_id=account, message_id=mid, recipient="once@example.test")
    # published twice outside the duplicate window's protection: a different Nats-Msg-Id, same event id
    await js.publish(f"events.{account}.accepted", ev.SerializeToString(), headers={"Nats-Msg-Id": "x1"})
    await js.publish(f"events.{account}.accepted", ev.SerializeToString(), headers={"Nats-Msg-Id": "x2"})

    async def drained() -> bool:
        try:
            info = await js.consumer_info(EVENTS, "recorder")
        except NotFoundError:  # the recorder has not declared its consumer yet
            return False
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(drained)
    async with sessions() as s:
        count = await s.scalar(select(func.count()).select_from(Event).where(Event.message_id == mid))
    assert count == 1
