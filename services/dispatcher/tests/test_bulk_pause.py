"""An account whose bulk lane is paused (complaints, postwire.db.bulk_pause): the router holds its bulk
mail in INBOUND and keeps routing its transactional mail; resuming routes the held message."""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.events import publish_event
from postwire.core.ids import new_id
from postwire.core.topology import INBOUND, inbound_held_subject
from postwire.db import bulk_pause
from postwire.db.accounts import create_account
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2


async def _held(js: JetStreamContext, account: str) -> int:
    info = await js.stream_info(INBOUND, subjects_filter=inbound_held_subject(account))
    return info.state.messages


async def test_paused_bulk_mail_waits_while_transactional_mail_is_delivered_and_resuming_sends_it(
        start_dispatcher: Any, submit: Any, events: Any, js: JetStreamContext, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    dns_server.add_mail_domain(domain)
    async with sessions.begin() as s:
        account = (await create_account(s, f"paused-{new_id()[-8:]}")).account_id

    async def publish(ev: envelope_pb2.Event) -> None:
        await publish_event(js, ev)

    async with sessions() as s:
        assert await bulk_pause.pause(s, account, "test", publish) is not None
    # the router reads the paused accounts for every bulk message, and looks at held mail every 0.2 s
    await start_dispatcher(bulk_pause_cache_ttl_s=0, bulk_hold_recheck_s=0.2)

    bulk = await submit([f"bulk@{domain}"], make_mime(), account_id=account, stream="bulk")
    await eventually(lambda: _held(js, account))  # moved to inbound.<account>.held
    tx = await submit([f"tx@{domain}"], make_mime(), account_id=account, stream="transactional")
    [delivered] = await eventually(lambda: events.of("delivered", f"tx@{domain}"))
    assert delivered.message_id == tx
    assert [r.rcpt_tos for r in smtp_sink.handler.received] == [[f"tx@{domain}"]]
    assert events.of("accepted", f"bulk@{domain}") == []  # not routed at all
    assert await _held(js, account) == 1  # and still waiting

    async with sessions() as s:
        assert await bulk_pause.resume(s, account, "test", publish) is not None
    [delivered] = await eventually(lambda: events.of("delivered", f"bulk@{domain}"))
    assert delivered.message_id == bulk
    assert sorted(r.rcpt_tos[0] for r in smtp_sink.handler.received) == [f"bulk@{domain}", f"tx@{domain}"]
    assert await eventually(lambda: _held_empty(js, account))
    assert [e.type for e in events.events if e.account_id == account and e.type.startswith("bulk_")] == [
        "bulk_paused", "bulk_resumed"]


async def _held_empty(js: JetStreamContext, account: str) -> bool:
    return await _held(js, account) == 0
