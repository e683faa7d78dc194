"""Messages built from a stored template: the recorder keeps the template of their accepted events on the
message row, and the events of every type of those messages are found by it (GET /v1/events/template/…)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio
from sqlalchemy import func, select

from postwire.core.events import make_event, publish_event
from postwire.core.ids import derived_id, new_id, new_message_id
from postwire.db.events_query import EventFilter, event_row_json, list_events, list_window, template_ids
from postwire.db.models import Event, Message
from postwire.recorder.service import serve
from postwire.recorder.settings import RecorderSettings
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer


@pytest_asyncio.fixture
async def recorder(nats_server: NatsServer, pg_url: str) -> AsyncIterator[None]:
    stop = asyncio.Event()
    settings = RecorderSettings(nats_url=nats_server.url, database_url=pg_url, recorder_retry_s=0.1)
    task = asyncio.create_task(serve(settings, stop))
    yield
    stop.set()
    await task


async def _recorded(sessions, account: str, count: int) -> bool:
    async with sessions() as s:
        n = await s.scalar(select(func.count()).select_from(Event).where(Event.account_id == account))
    return n == count


async def test_the_template_of_accepted_events_finds_every_event_of_its_messages(js, recorder,
                                                                                 sessions) -> None:
    account, other = new_id("a"), new_id("a")
    template = secrets.randbelow(1 << 40) + 1
    # one message, one id per recipient (as /v1/send hands out): each id is a message row of its own
    first = new_message_id()
    ids = {"ann@example.test": first, "bob@example.test": derived_id(first, 1)}
    plain = new_message_id()  # written in the send itself
    events = [make_event("accepted", account_id=account, message_id=mid, recipient=rcpt,
                         mail_from="shop@example.test", subject="Welcome", template_id=template)
              for rcpt, mid in ids.items()]
    events += [
        make_event("accepted", account_id=account, message_id=plain, recipient="cy@example.test"),
        # the services that report outcomes do not know the template
        make_event("delivered", account_id=account, message_id=ids["ann@example.test"],
                   recipient="ann@example.test", attempt=1, smtp_code=250),
        make_event("bounced", account_id=account, message_id=ids["bob@example.test"],
                   recipient="bob@example.test", smtp_code=550, reason="userunknown", hardbounce=True),
        make_event("opened", account_id=account, message_id=ids["ann@example.test"],
                   recipient="ann@example.test", unique=True),
        make_event("delivered", account_id=account, message_id=plain, recipient="cy@example.test",
                   attempt=1, smtp_code=250),
        # the same template id in another account is another account's business
        make_event("accepted", account_id=other, message_id=new_message_id(), recipient="dee@example.test",
                   template_id=template),
    ]
    for ev in events:
        await publish_event(js, ev)
    await eventually(lambda: _recorded(sessions, account, 7))
    await eventually(lambda: _recorded(sessions, other, 1))

    async with sessions() as s:
        rows = {m.id: m.template_id for m in await s.scalars(
            select(Message).where(Message.account_id == account))}
        assert rows == {ids["ann@example.test"]: template, ids["bob@example.test"]: template, plain: None}

        now = datetime.now(UTC)
        f = EventFilter(template_id=template, start=now - timedelta(hours=1), end=now + timedelta(hours=1))
        found = await list_window(s, account, f, 100)
        assert sorted((e.recipient, e.type) for e in found) == [
            ("ann@example.test", "accepted"), ("ann@example.test", "delivered"),
            ("ann@example.test", "opened"), ("bob@example.test", "accepted"),
            ("bob@example.test", "bounced")]
        page = await list_events(s, account, EventFilter(template_id=template, types=["bounced"]), 100)
        assert [(e["recipient"], e["type"]) for e in page.events] == [("bob@example.test", "bounced")]
        assert await list_window(s, account, EventFilter(template_id=template + 1, start=f.start, end=f.end),
                                 100) == []

        every = [*ids.values(), plain, new_message_id()]
        assert await template_ids(s, account, every) == {mid: template for mid in ids.values()}
        assert await template_ids(s, other, every) == {}
        assert await template_ids(s, account, []) == {}

        # the accepted events carry it in the events API's JSON too; the message written in the send: null
        accepted = {e.recipient: e for e in await s.scalars(
            select(Event).where(Event.account_id == account, Event.type == "accepted"))}
    assert event_row_json(accepted["ann@example.test"])["template_id"] == template
    assert event_row_json(accepted["cy@example.test"])["template_id"] is None
    assert "template_id" not in accepted["cy@example.test"].data  # stored only when there is one
