"""The recorder against a real NATS server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import nats
import pytest_asyncio
from nats.js.errors import NotFoundError
from sqlalchemy import func, select, text

from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import EVENTS
from postwire.db.models import Event, Message, Recipient, Suppression
from postwire.recorder.recorder import record_batch
from postwire.recorder.service import serve
from postwire.recorder.settings import RecorderSettings
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.v1 import envelope_pb2


@pytest_asyncio.fixture
async def recorder(nats_server: NatsServer, pg_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    settings = RecorderSettings(nats_url=nats_server.url, database_url=pg_url, recorder_retry_s=0.1)
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


async def _events(sessions, mid: str) -> list[Event]:
    async with sessions() as s:
        return list((await s.scalars(select(Event).where(Event.message_id == mid).order_by(Event.seq))).all())


async def test_opens_and_clicks_are_stored_and_leave_the_delivery_state_alone(js, recorder, sessions) -> None:
    account, mid, rcpt = new_id("a"), new_message_id(), "reader@example.test"
    await publish_event(js, make_event("accepted", account_id=account, message_id=mid, recipient=rcpt))
    await publish_event(js, make_event("failed", account_id=account, message_id=mid, recipient=rcpt,
                                       attempt=1, smtp_code=550, enhanced_status="5.7.1", reason="filtered",
                                       hardbounce=False))
    browser = "Mozilla/5.0 (X11; Linux x86_64)"
    tracking = [
        make_event("opened", account_id=account, message_id=mid, recipient=rcpt, client_ip="198.51.100.7",
                   user_agent=browser, unique=True),
        make_event("clicked", account_id=account, message_id=mid, recipient=rcpt, attempt=1,
                   url="https://shop.example.test/a", link_index=0, client_ip="198.51.100.7",
                   user_agent=browser, unique=True),
        make_event("clicked", account_id=account, message_id=mid, recipient=rcpt, attempt=2,
                   url="https://shop.example.test/b", link_index=3, client_ip="2001:db8::1",
                   user_agent=browser),
    ]
    for ev in tracking:
        await publish_event(js, ev)
    stored = await eventually(lambda: _all_of(sessions, mid, 5))
    data = {e.event_id: e.data for e in stored}
    assert {k: data[tracking[0].event_id].get(k) for k in ("client_ip", "user_agent", "unique")} == {
        "client_ip": "198.51.100.7", "user_agent": browser, "unique": True}
    first_click, other_click = data[tracking[1].event_id], data[tracking[2].event_id]
    assert (first_click["url"], first_click.get("link_index", 0), first_click["unique"]) == (
        "https://shop.example.test/a", 0, True)
    assert (other_click["url"], other_click["link_index"], other_click.get("unique", False),
            other_click["client_ip"]) == ("https://shop.example.test/b", 3, False, "2001:db8::1")

    row = await _recipient(sessions, mid, rcpt)  # a click does not make a failed recipient delivered
    assert row is not None and (row.status, row.attempts, row.smtp_code) == ("failed", 1, 550)
    async with sessions() as s:
        suppressed = await s.scalar(select(func.count()).select_from(Suppression)
                                    .where(Suppression.account_id == account))
    assert suppressed == 0


async def _all_of(sessions, mid: str, count: int) -> list[Event] | None:
    stored = await _events(sessions, mid)
    return stored if len(stored) == count else None


async def test_a_click_on_an_unrecorded_message_does_not_fail_the_batch(js, recorder, sessions) -> None:
    account, unknown = new_id("a"), new_message_id()
    click = make_event("clicked", account_id=account, message_id=unknown, recipient="who@example.test",
                       url="https://example.test/", link_index=1, user_agent="Bot\x00/1.0")
    await publish_event(js, click)
    marker = make_event("accepted", account_id=account, message_id=new_message_id(),
                        recipient="m@example.test")
    await publish_event(js, marker)  # recorded after the click: the click's batch went through
    await eventually(lambda: _recipient(sessions, marker.message_id, "m@example.test"))
    [stored] = await _events(sessions, unknown)
    assert (stored.type, stored.data["url"], stored.data["user_agent"]) == (
        "clicked", "https://example.test/", "Bot/1.0")  # U+0000 dropped: jsonb refuses it
    async with sessions() as s:
        assert await s.get(Message, unknown) is None
        assert await s.scalar(select(func.count()).select_from(Recipient)
                              .where(Recipient.message_id == unknown)) == 0


async def test_accepted_events_keep_their_dsn_parameters(js, recorder, sessions) -> None:
    account, mid = new_id("a"), new_message_id()
    asked = make_event("accepted", account_id=account, message_id=mid, recipient="asked@example.test",
                       dsn=envelope_pb2.Dsn(ret="HDRS", envid="env-7"),
                       recipient_dsn=envelope_pb2.RecipientDsn(notify=["FAILURE", "DELAY"],
                                                               orcpt="rfc822;Asked@Example.test"))
    plain = make_event("accepted", account_id=account, message_id=mid, recipient="plain@example.test")
    await publish_event(js, asked)
    await publish_event(js, plain)
    stored = {e.recipient: e.data for e in await eventually(lambda: _all_of(sessions, mid, 2))}
    assert (stored["asked@example.test"]["dsn"], stored["asked@example.test"]["notify"],
            stored["asked@example.test"]["orcpt"]) == (
        {"ret": "HDRS", "envid": "env-7"}, ["FAILURE", "DELAY"], "rfc822;Asked@Example.test")
    assert not {"dsn", "notify", "orcpt"} & set(stored["plain@example.test"])


async def test_one_batch_holding_a_whole_history_lands_as_if_one_by_one(sessions) -> None:
    """A batch is a few set-based statements: several outcomes of one recipient, and a second copy of an
    event, in the same batch must still give the state the events give one after the other."""
    account, mid, rcpt = new_id("a"), new_message_id(), "batch@example.test"
    accepted = make_event("accepted", account_id=account, message_id=mid, recipient=rcpt,
                          mail_from="from@example.test", subject="Batched", size=10, source="smtp")
    deferred = make_event("deferred", account_id=account, message_id=mid, recipient=rcpt, attempt=1,
                          smtp_code=451)
    delivered = make_event("delivered", account_id=account, message_id=mid, recipient=rcpt, attempt=2,
                           smtp_code=250, mx_host="mx.example.test")
    late = make_event("deferred", account_id=account, message_id=mid, recipient=rcpt, attempt=3,
                      smtp_code=421)
    done = await record_batch(sessions, [accepted, deferred, accepted, delivered, late])
    assert [ev.event_id for ev in done.new] == [e.event_id for e in (accepted, deferred, delivered, late)]
    row = await _recipient(sessions, mid, rcpt)
    assert row is not None and (row.status, row.smtp_code, row.attempts) == ("delivered", 250, 2)
    async with sessions() as s:
        stored = await s.scalars(select(Event.type).where(Event.message_id == mid).order_by(Event.seq))
        assert list(stored) == ["accepted", "deferred", "delivered", "deferred"]
        msg = await s.get(Message, mid)
        assert msg is not None and (msg.subject, msg.source) == ("Batched", "smtp")
    again = await record_batch(sessions, [delivered])
    assert again.new == []


async def test_acks_that_cannot_be_sent_do_not_end_the_recorder(nats_server: NatsServer, pg_url: str,
                                                                sessions) -> None:
    """NATS goes away between a batch's commit and its acks (the fault of a cluster failover, made
    certain here: the batch is held at a table lock until the recorder's connection is down). The acks
    fail at once (nats-py buffers nothing while reconnecting); the recorder logs that and goes on, the
    events wait for redelivery, and once NATS is back new events are recorded: the service did not end."""
    stop = asyncio.Event()
    ops_port: list[int] = []
    settings = RecorderSettings(nats_url=nats_server.url, database_url=pg_url)
    task = asyncio.create_task(serve(settings, stop, started=ops_port.append))
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        await eventually(lambda: ops_port)
        account = new_id("a")
        held = make_event("accepted", account_id=account, message_id=new_message_id(), recipient="h@x.test")
        async with sessions() as lock:
            await lock.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))  # the batch's INSERT waits
            await publish_event(js, held)
            await eventually(lambda: _insert_waiting(sessions))
            await nats_server.stop(kill=True)
            async with httpx.AsyncClient() as http:  # the service's readiness follows its connection
                await eventually(lambda: _not_ready(http, ops_port[0]))
            await lock.rollback()  # the batch commits now, with NATS unreachable
        await eventually(lambda: _recipient(sessions, held.message_id, "h@x.test"))
        await asyncio.sleep(1)  # its acks have been tried (right after the commit) while NATS is down
        assert not task.done()
        await nats_server.start()
        after = make_event("accepted", account_id=account, message_id=new_message_id(), recipient="a@x.test")
        await eventually(lambda: nc.is_connected)
        await publish_event(js, after)
        await eventually(lambda: _recipient(sessions, after.message_id, "a@x.test"))
        assert not task.done()
    finally:
        stop.set()
        await task  # ends cleanly: nothing escaped the recorder
        await nc.close()


async def _insert_waiting(sessions) -> bool:
    async with sessions() as s:
        return bool(await s.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%INSERT INTO events%'")))


async def _not_ready(http: httpx.AsyncClient, port: int) -> bool:
    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200
