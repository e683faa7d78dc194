"""/v1/stats' bounce and complaint rates (1 h, 24 h, 7 days up to now; the sending domain filter), and
GET /v1/account/bulk, POST /v1/account/bulk/resume (docs/events.md, docs/delivery.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from nats.js import JetStreamContext
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.topology import EVENTS, event_subject
from postwire.db.accounts import NewCredentials
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Account
from postwire.v1 import envelope_pb2

from .conftest import Gateway, MakeAccount
from .test_events_api import _sent_from


@pytest_asyncio.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_stats_give_rates_per_window_and_sending_domain(
        gateway: Gateway, account: NewCredentials, make_account: MakeAccount, sessions: Any) -> None:
    aid, h = account.account_id, gateway.auth(account)
    now = datetime.now(UTC)
    for k in range(3):  # 30 minutes ago, from shop.example: 3 delivered, 1 complained
        types = ("accepted", "delivered", "complained") if k == 0 else ("accepted", "delivered")
        await _sent_from(sessions, aid, "a@shop.example", now - timedelta(minutes=30), *types)
    await _sent_from(sessions, aid, "a@news.example", now - timedelta(hours=5), "accepted", "failed")
    await _sent_from(sessions, aid, "a@news.example", now - timedelta(days=3), "accepted", "delivered")
    await _sent_from(sessions, aid, "a@news.example", now - timedelta(days=8), "accepted", "delivered")
    other = await make_account()
    await _sent_from(sessions, other.account_id, "a@shop.example", now - timedelta(minutes=30), "accepted",
                     "delivered", "complained")

    r = await gateway.http.get("/v1/stats", headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"stats", "totals", "start", "end", "tag", "domain"} <= set(body)  # as before, plus rates
    rates = body["rates"]
    assert rates["1h"] == {"delivered": 3, "attempted": 3, "bounced": 0, "complained": 1, "bounce_rate": 0.0,
                           "complaint_rate": 1 / 3}
    assert rates["24h"] == {"delivered": 3, "attempted": 4, "bounced": 1, "complained": 1,
                            "bounce_rate": 0.25, "complaint_rate": 1 / 3}
    assert (rates["7d"]["delivered"], rates["7d"]["attempted"], rates["7d"]["complained"]) == (4, 5, 1)
    news = (await gateway.http.get("/v1/stats", headers=h, params={"domain": "News.Example"})).json()["rates"]
    assert news["1h"]["complaint_rate"] is None and news["1h"]["bounce_rate"] is None
    assert (news["24h"]["bounced"], news["24h"]["bounce_rate"], news["7d"]["delivered"]) == (1, 1.0, 1)


async def test_resuming_the_bulk_lane_clears_the_pause_and_publishes_an_event(
        gateway: Gateway, account: NewCredentials, sessions: Any, js: JetStreamContext) -> None:
    aid, h = account.account_id, gateway.auth(account)
    state = (await gateway.http.get("/v1/account/bulk", headers=h)).json()
    assert state == {"paused": False, "paused_at": None, "pause_at_complaint_rate": 0.003}
    r = await gateway.http.post("/v1/account/bulk/resume", headers=h)
    assert r.status_code == 200 and r.json()["resumed"] is False  # nothing to resume

    async with sessions.begin() as s:
        await s.execute(update(Account).where(Account.id == aid).values(bulk_paused_at=datetime.now(UTC)))
    assert (await gateway.http.get("/v1/account/bulk", headers=h)).json()["paused"] is True
    r = await gateway.http.post("/v1/account/bulk/resume", headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"resumed": True, "paused": False, "paused_at": None, "pause_at_complaint_rate": 0.003}
    stored = await js.get_last_msg(EVENTS, event_subject(aid, "bulk_resumed"))
    ev = envelope_pb2.Event.FromString(stored.data)
    assert ev.type == "bulk_resumed" and ev.account_id == aid and ev.message_id == ""
