"""/v1/events, /v1/bounces and /v1/stats against the real gateway and PostgreSQL.

Events are written the way the recorder writes them (one INSERT per event, data from the protobuf), so
the tests also cover the shape the webhook notifier sends (the same serializer).
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.events import make_event
from postwire.core.ids import new_message_id
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.events_query import event_proto_data
from postwire.db.models import Event, Message
from postwire.v1 import envelope_pb2

Sessions = async_sessionmaker[AsyncSession]


@pytest_asyncio.fixture
async def sessions(pg_url: str):
    engine = make_engine(pg_url, pool_size=10)
    yield make_sessionmaker(engine)
    await engine.dispose()


def _event(type_: str, account_id: str, *, at: datetime | None = None, recipient: str = "r@example.test",
           message_id: str | None = None, attempt: int = 0, **fields: Any) -> envelope_pb2.Event:
    ev = make_event(type_, account_id=account_id, message_id=message_id or new_message_id(),
                    recipient=recipient, attempt=attempt, **fields)
    if at is not None:
        ev.at.FromDatetime(at)
    return ev


async def _record(session: AsyncSession, ev: envelope_pb2.Event) -> None:
    """What the recorder does for the events table."""
    await session.execute(insert(Event).values(
        event_id=ev.event_id, account_id=ev.account_id, message_id=ev.message_id, recipient=ev.recipient,
        type=ev.type, at=ev.at.ToDatetime(tzinfo=UTC), data=event_proto_data(ev)).on_conflict_do_nothing())


async def _store(sessions: Sessions, *events: envelope_pb2.Event) -> None:
    async with sessions.begin() as s:
        for ev in events:
            await _record(s, ev)


async def _all_pages(gateway, headers, path: str = "/v1/events", **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await gateway.http.get(path, headers=headers, params={**params, **({"cursor": cursor} if cursor
                                                                                else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["events"])
        if body["next_cursor"] is None:
            return out
        cursor = body["next_cursor"]


async def test_filters_and_event_shape(gateway, account, make_account, sessions) -> None:
    aid, h = account.account_id, gateway.auth(account)
    mid = new_message_id()
    base = datetime(2026, 11, 20, 10, tzinfo=UTC)
    await _store(
        sessions,
        _event("accepted", aid, at=base, message_id=mid, recipient="a@x.test", tags=["welcome"],
               metadata={"user": "42"}, mail_from="s@x.test", subject="Hi", size=10, source="api"),
        _event("delivered", aid, at=base + timedelta(minutes=1), message_id=mid, recipient="a@x.test",
               attempt=1, tags=["welcome"], smtp_code=250, enhanced_status="2.0.0", response="ok",
               mx_host="mx.x.test"),
        _event("bounced", aid, at=base + timedelta(hours=2), recipient="B@x.test", reason="userunknown",
               hardbounce=True, smtp_code=550, enhanced_status="5.1.1", remote_mta="mx.b.test"),
        _event("complained", aid, at=base + timedelta(days=1), recipient="c@x.test", feedback_type="abuse"),
    )
    other = await make_account()
    await _store(sessions, _event("bounced", other.account_id, at=base, recipient="a@x.test"))

    everything = await _all_pages(gateway, h)
    assert [e["type"] for e in everything] == ["accepted", "delivered", "bounced", "complained"]
    accepted, delivered, bounced, complained = everything
    assert accepted["from"] == "s@x.test" and accepted["tags"] == ["welcome"]
    assert accepted["metadata"] == {"user": "42"} and accepted["at"] == "2026-11-20T10:00:00.000000Z"
    assert {k: delivered[k] for k in ("smtp_code", "enhanced_status", "mx_host", "attempt")} == \
        {"smtp_code": 250, "enhanced_status": "2.0.0", "mx_host": "mx.x.test", "attempt": 1}
    assert (bounced["reason"], bounced["hardbounce"], bounced["remote_mta"]) == \
        ("userunknown", True, "mx.b.test")
    assert complained["feedback_type"] == "abuse"

    async def ids(**params: Any) -> list[str]:
        return [e["type"] for e in await _all_pages(gateway, h, **params)]

    assert await ids(type="bounced,complained") == ["bounced", "complained"]
    assert await ids(type=["delivered", "complained"]) == ["delivered", "complained"]
    assert await ids(recipient="b@x.test") == ["bounced"]
    assert await ids(message_id=mid) == ["accepted", "delivered"]
    assert await ids(tag="welcome") == ["accepted", "delivered"]
    assert await ids(start="2026-11-20T11:00:00Z", end="2026-11-21T10:00:00Z") == ["bounced"]
    assert await ids(start="2026-11-20T11:00:00", end="2026-11-21T10:00:01") == ["bounced", "complained"]

    bad = await gateway.http.get("/v1/events", headers=h, params={"type": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "invalid_event_type"
    bad = await gateway.http.get("/v1/events", headers=h, params={"cursor": "!!"})
    assert bad.status_code == 422 and bad.json()["error"] == "validation_error"
    bad = await gateway.http.get("/v1/events", headers=h, params={"limit": 1001})
    assert bad.status_code == 422
    assert (await gateway.http.get("/v1/events")).status_code == 401


async def test_account_cannot_read_another_accounts_events(gateway, account, make_account, sessions) -> None:
    mine = _event("delivered", account.account_id)
    await _store(sessions, mine)
    intruder = await make_account()
    h = gateway.auth(intruder)
    for path, params in (("/v1/events", {}), ("/v1/events", {"message_id": mine.message_id}),
                         ("/v1/bounces", {}), ("/v1/stats", {})):
        r = await gateway.http.get(path, headers=h, params=params)
        assert r.status_code == 200
        assert mine.event_id not in r.text
    stats = (await gateway.http.get("/v1/stats", headers=h)).json()["stats"]
    assert all(day["delivered"] == 0 for day in stats)


async def test_pagination_returns_every_event_once_while_events_arrive(gateway, account, sessions) -> None:
    """Writers commit concurrently and out of order (each transaction sleeps after its INSERT), with
    ``at`` values deliberately in the past, while a reader pages with a small limit."""
    aid, h = account.account_id, gateway.auth(account)
    written: list[str] = []
    writers_done = asyncio.Event()

    async def writer(n: int) -> None:
        for _ in range(n):
            ev = _event("delivered", aid, at=datetime.now(UTC) - timedelta(seconds=random.uniform(0, 600)))
            async with sessions.begin() as s:
                await _record(s, ev)
                await asyncio.sleep(random.uniform(0, 0.03))  # hold the seq, commit later
            written.append(ev.event_id)

    async def writers() -> None:
        await asyncio.gather(*(writer(25) for _ in range(6)))
        writers_done.set()

    task = asyncio.create_task(writers())
    seen: list[str] = []
    cursor: str | None = None
    while True:
        done_before = writers_done.is_set()
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        r = await gateway.http.get("/v1/events", headers=h, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen.extend(e["id"] for e in body["events"])
        cursor = body["resume_cursor"] or cursor
        if done_before and body["next_cursor"] is None:
            break  # a page that started after the last commit came back short: we are at the end
        if body["next_cursor"] is None:
            await asyncio.sleep(0.01)
    await task
    assert len(seen) == len(set(seen)), "an event was returned twice"
    assert set(seen) == set(written) and len(written) == 150


async def test_stats_count_per_day_and_type(gateway, account, sessions) -> None:
    aid, h = account.account_id, gateway.auth(account)
    d1, d2 = datetime(2026, 10, 1, 23, 59, tzinfo=UTC), datetime(2026, 10, 2, 0, 1, tzinfo=UTC)
    await _store(sessions,
                 _event("accepted", aid, at=d1, tags=["news"]),
                 _event("delivered", aid, at=d1, tags=["news"]),
                 _event("delivered", aid, at=d1), _event("bounced", aid, at=d2, tags=["news"]),
                 _event("delivered", aid, at=d2 + timedelta(days=5)))
    r = await gateway.http.get("/v1/stats", headers=h, params={"start": "2026-10-01T00:00:00Z",
                                                                "end": "2026-10-04T00:00:00Z"})
    assert r.status_code == 200, r.text
    stats = r.json()["stats"]
    assert [s["day"] for s in stats] == ["2026-10-01", "2026-10-02", "2026-10-03"]
    assert (stats[0]["accepted"], stats[0]["delivered"], stats[0]["bounced"]) == (1, 2, 0)
    assert (stats[1]["bounced"], stats[1]["delivered"], stats[2]["delivered"]) == (1, 0, 0)
    tagged = (await gateway.http.get("/v1/stats", headers=h, params={
        "start": "2026-10-01T00:00:00Z", "end": "2026-10-03T00:00:00Z", "tag": "news"})).json()["stats"]
    assert (tagged[0]["delivered"], tagged[0]["accepted"], tagged[1]["bounced"]) == (1, 1, 1)
    default = (await gateway.http.get("/v1/stats", headers=h)).json()["stats"]
    assert len(default) == 30 and default[-1]["day"] == datetime.now(UTC).date().isoformat()


async def _sent_from(sessions: Sessions, account_id: str, sender: str, day: datetime, *types: str,
                     tags: tuple[str, ...] = ()) -> None:
    """A message from ``sender`` as the recorder stores it (its row, then its events) on ``day``."""
    mid = new_message_id()
    async with sessions.begin() as s:
        await s.execute(insert(Message).values(id=mid, account_id=account_id, mail_from=sender, subject="",
                                               size=1, source="api", tags=list(tags), metadata={}))
    await _store(sessions, *(_event(type_, account_id, at=day + timedelta(minutes=k), message_id=mid,
                                    tags=list(tags)) for k, type_ in enumerate(types)))


async def test_stats_by_sending_domain(gateway, account, make_account, sessions) -> None:
    aid, h = account.account_id, gateway.auth(account)
    d1, d2 = datetime(2026, 10, 1, 9, tzinfo=UTC), datetime(2026, 10, 2, 22, tzinfo=UTC)
    await _sent_from(sessions, aid, "shop@Shop.example", d1, "accepted", "delivered", "opened",
                     tags=("news",))
    await _sent_from(sessions, aid, "shop@shop.example", d2, "accepted", "delivered")
    await _sent_from(sessions, aid, "info@news.example", d1, "accepted", "failed", tags=("news",))
    await _sent_from(sessions, aid, "", d1, "accepted", "delivered")  # the null sender: no domain
    await _store(sessions, _event("opened", aid, at=d1))  # no message recorded: no domain
    other = await make_account()  # the same domain, another account: never counted here
    await _sent_from(sessions, other.account_id, "x@shop.example", d1, "accepted", "delivered")

    async def stats(path: str = "/v1/stats", **params: str) -> dict[str, Any]:
        r = await gateway.http.get(path, headers=h, params={
            "start": "2026-10-01T00:00:00Z", "end": "2026-10-03T00:00:00Z", **params})
        assert r.status_code == 200, r.text
        return dict(r.json())

    shop, news, every = await stats(domain="shop.example"), await stats(domain="news.example"), await stats()
    assert shop["domain"] == "shop.example" and every["domain"] is None
    assert (shop["totals"]["messages"], shop["totals"]["deliveries"], shop["totals"]["opens"]) == (2, 2, 1)
    assert (news["totals"]["messages"], news["totals"]["deliveries"], news["totals"]["bounces"]) == (1, 0, 1)
    assert (every["totals"]["messages"], every["totals"]["opens"]) == (4, 2)
    assert [(d["day"], d["accepted"]) for d in shop["stats"]] == [("2026-10-01", 1), ("2026-10-02", 1)]
    assert (await stats(domain="SHOP.Example"))["totals"] == shop["totals"]
    assert (await stats(domain="other.example"))["totals"]["messages"] == 0
    # with a tag: the messages with both, by query or path
    both = await stats(domain="shop.example", tag="news")
    assert both["totals"] == (await stats("/v1/stats/news", domain="shop.example"))["totals"]
    assert (both["totals"]["messages"], both["totals"]["opens"], both["tag"]) == (1, 1, "news")
    # a range that cuts days: the partial ones are counted from the events, the same way
    cut = await stats(domain="shop.example", start="2026-10-01T08:00:00Z", end="2026-10-02T23:00:00Z")
    assert cut["totals"] == shop["totals"]
    assert (await stats(domain="shop.example", end="2026-10-02T21:00:00Z"))["totals"]["messages"] == 1
    r = await gateway.http.get("/v1/stats", headers=h, params={"domain": "a" * 254})
    assert r.status_code == 422


async def test_bounces_json_and_csv(gateway, account, sessions) -> None:
    aid, h = account.account_id, gateway.auth(account)
    await _store(sessions,
                 _event("delivered", aid),
                 _event("failed", aid, recipient="u@x.test", smtp_code=550, enhanced_status="5.1.1",
                        response="no such user", reason="userunknown", hardbounce=True),
                 _event("failed", aid, recipient="legacy@x.test", smtp_code=554),
                 _event("bounced", aid, recipient="full@x.test", reason="mailboxfull", tags=["a", "b"]),
                 _event("complained", aid, recipient="c@x.test", feedback_type="abuse"))
    page = (await gateway.http.get("/v1/bounces", headers=h)).json()
    assert [e["recipient"] for e in page["events"]] == ["u@x.test", "full@x.test", "c@x.test"]
    only = (await gateway.http.get("/v1/bounces", headers=h, params={"type": "bounced"})).json()
    assert [e["recipient"] for e in only["events"]] == ["full@x.test"]
    assert (await gateway.http.get("/v1/bounces", headers=h, params={"type": "delivered"})).status_code == 422

    first = await gateway.http.get("/v1/bounces", headers=h, params={"format": "csv", "limit": 2})
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(first.text)))
    assert [(r["recipient"], r["reason"], r["hardbounce"]) for r in rows] == \
        [("u@x.test", "userunknown", "True"), ("full@x.test", "mailboxfull", "False")]
    assert rows[1]["tags"] == "a b" and rows[0]["smtp_code"] == "550"
    rest = await gateway.http.get("/v1/bounces", headers=h, params={
        "format": "csv", "limit": 2, "cursor": first.headers["postwire-next-cursor"]})
    assert [r["recipient"] for r in csv.DictReader(io.StringIO(rest.text))] == ["c@x.test"]
    assert "postwire-next-cursor" not in rest.headers
    # polling: nothing new since the resume cursor, then one new bounce
    resume = rest.headers["postwire-resume-cursor"]
    nothing = await gateway.http.get("/v1/bounces", headers=h, params={"cursor": resume})
    assert nothing.json()["events"] == []
    await _store(sessions, _event("bounced", aid, recipient="new@x.test", reason="hostunknown"))
    later = (await gateway.http.get("/v1/bounces", headers=h, params={"cursor": resume})).json()
    assert [e["recipient"] for e in later["events"]] == ["new@x.test"]
