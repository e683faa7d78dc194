"""/u/{token} over real HTTP, against a real PostgreSQL, the real SUPPRESSIONS bucket and the EVENTS stream;
plus the token, the header fields and the scope rules of the suppression list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.core import tracking, unsubscribe
from postwire.core.ids import new_message_id
from postwire.core.topology import EVENTS, event_subject
from postwire.db import suppressions as store
from postwire.db.accounts import NewCredentials
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.suppressions import SuppressionMirror, blocks
from postwire.testing.fixtures import eventually
from postwire.v1 import envelope_pb2

from .conftest import MakeAccount, StartGateway

SECRET = "api-unsubscribe-tests-verp-secret-0123456789"
KEY = unsubscribe.token_key(tracking.tracking_key(SECRET.encode()))


def _token(account_id: str, recipient: str, list_id: str = "", message_id: str | None = None) -> str:
    return unsubscribe.make_token(KEY, unsubscribe.Unsubscribe(account_id, message_id or new_message_id(),
                                                               recipient, list_id))


async def _row(pg_url: str, account_id: str, address: str) -> store.SuppressionInfo | None:
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            return await store.get(s, account_id, address)
    finally:
        await engine.dispose()


async def _stored_events(js: JetStreamContext, account_id: str) -> int:
    info = await js.stream_info(EVENTS, subjects_filter=event_subject(account_id, "unsubscribed"))
    return sum((info.state.subjects or {}).values())


async def test_one_click_post_suppresses_bulk_once_and_records_one_event(
        start_gateway: StartGateway, account: NewCredentials, js: JetStreamContext, pg_url: str) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    mid = new_message_id()
    token = _token(account.account_id, "Jane@Example.test", message_id=mid)

    page = await gw.http.get(f"/u/{token}")
    assert page.status_code == 200
    assert '<form method="post">' in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert "J…@Example.test" in page.text and "Jane@" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert await _row(pg_url, account.account_id, "jane@example.test") is None  # a GET changes nothing

    first = await gw.http.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert first.status_code == 200 and "Unsubscribed" in first.text
    assert "set-cookie" not in first.headers
    row = await _row(pg_url, account.account_id, "jane@example.test")
    assert row is not None
    assert (row.reason, row.source, row.scope, row.expires_at) == ("unsubscribe", "unsubscribe", "bulk", None)
    kv = await SuppressionMirror(js).lookup(account.account_id, "jane@example.test")
    assert kv is not None and kv.scope == "bulk" and kv.reason == "unsubscribe"
    stored = await js.get_last_msg(EVENTS, event_subject(account.account_id, "unsubscribed"))
    ev = envelope_pb2.Event.FromString(stored.data)
    assert (ev.type, ev.message_id, ev.recipient, ev.list_id) == ("unsubscribed", mid, "Jane@Example.test",
                                                                  "")
    assert row.source_event_id == ev.event_id

    again = await gw.http.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200
    assert await _stored_events(js, account.account_id) == 1  # idempotent: no second event


async def test_forged_tampered_and_other_accounts_tokens_suppress_nothing(
        start_gateway: StartGateway, make_account: MakeAccount, js: JetStreamContext, pg_url: str) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    mine, theirs = await make_account(), await make_account()
    token = _token(theirs.account_id, "victim@example.test")
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    foreign_key = unsubscribe.token_key(tracking.tracking_key(b"another installation's secret"))
    forged = unsubscribe.make_token(foreign_key, unsubscribe.Unsubscribe(mine.account_id, new_message_id(),
                                                                         "victim@example.test"))
    for bad in (flipped, forged, "not-a-token", "A" * 80):
        for method in ("GET", "POST"):
            r = await gw.http.request(method, f"/u/{bad}", content=b"List-Unsubscribe=One-Click")
            assert r.status_code == 404 and "not valid" in r.text, (method, bad)
    assert await _row(pg_url, mine.account_id, "victim@example.test") is None

    # the other account's genuine token suppresses in that account only
    assert (await gw.http.post(f"/u/{token}")).status_code == 200
    assert await _row(pg_url, mine.account_id, "victim@example.test") is None
    assert await _row(pg_url, theirs.account_id, "victim@example.test") is not None
    assert await _stored_events(js, mine.account_id) == 0


async def test_a_list_unsubscribe_is_scoped_to_the_list(
        start_gateway: StartGateway, account: NewCredentials, js: JetStreamContext, pg_url: str) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    assert (await gw.http.post(f"/u/{_token(account.account_id, 'l@example.test', 'weekly.example')}")
            ).status_code == 200
    row = await _row(pg_url, account.account_id, "l@example.test")
    assert row is not None and row.scope == "list:weekly.example"
    [ev] = await eventually(lambda: _events_of(js, account.account_id))
    assert ev.list_id == "weekly.example"
    # a second list makes it the account's bulk mail
    assert (await gw.http.post(f"/u/{_token(account.account_id, 'l@example.test', 'monthly.example')}")
            ).status_code == 200
    row = await _row(pg_url, account.account_id, "l@example.test")
    assert row is not None and row.scope == "bulk"


async def _events_of(js: JetStreamContext, account_id: str) -> list[envelope_pb2.Event]:
    stored = await js.get_last_msg(EVENTS, event_subject(account_id, "unsubscribed"))
    return [envelope_pb2.Event.FromString(stored.data)]


async def test_a_hard_bounce_or_complaint_makes_an_unsubscribe_a_full_suppression(
        pg_url: str, make_account: MakeAccount) -> None:
    creds = await make_account()
    engine = make_engine(pg_url)
    sessions = make_sessionmaker(engine)

    async def add(*args: Any, **kw: Any) -> store.SuppressionInfo:
        s: AsyncSession
        async with sessions.begin() as s:
            return await store.add(s, creds.account_id, *args, **kw)

    try:
        first = await add("u@example.test", "unsubscribe", "unsubscribe", scope="bulk")
        soft = await add("u@example.test", "mailboxfull", store.SOFT,
                         expires_at=datetime.now(UTC) + timedelta(days=30))
        assert (soft.scope, soft.source, soft.expires_at) == ("bulk", "unsubscribe", None)  # not weakened
        hard = await add("u@example.test", "userunknown", "bounce")
        assert (hard.scope, hard.source, hard.created_at) == ("all", "bounce", first.created_at)
        again = await add("u@example.test", "unsubscribe", "unsubscribe", scope="bulk")
        assert (again.scope, again.source) == ("all", "bounce")  # an unsubscribe never narrows it
        # over an entry that expires, the unsubscribe takes over: it must outlast it
        await add("w@example.test", "mailboxfull", store.SOFT,
                  expires_at=datetime.now(UTC) + timedelta(days=1))
        took = await add("w@example.test", "unsubscribe", "unsubscribe", scope="list:x")
        assert (took.scope, took.expires_at) == ("list:x", None)
        complaint = await add("w@example.test", "complaint", "complaint")
        assert complaint.scope == "all"
    finally:
        await engine.dispose()


@pytest.mark.parametrize(("scope", "lane", "list_id", "blocked"), [
    ("all", "transactional", "", True), ("all", "bulk", "", True),
    ("bulk", "bulk", "", True), ("bulk", "bulk", "weekly", True), ("bulk", "transactional", "", False),
    ("list:weekly", "bulk", "weekly", True), ("list:weekly", "bulk", "monthly", False),
    ("list:weekly", "bulk", "", False), ("list:weekly", "transactional", "weekly", False),
])
def test_what_a_scope_blocks(scope: str, lane: str, list_id: str, blocked: bool) -> None:
    assert blocks(scope, lane, list_id) is blocked


def test_token_header_fields_and_feedback_id() -> None:
    what = unsubscribe.Unsubscribe("acct", new_message_id(), "Ünïcode@example.test", "news.example")
    token = unsubscribe.make_token(KEY, what)
    assert unsubscribe.read_token(KEY, token) == what
    assert "example" not in token and token == unsubscribe.make_token(KEY, what)  # sealed, and stable
    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read_token(unsubscribe.token_key(b"other"), token)
    assert unsubscribe.feedback_id(["spring: sale"], "a1", "bulk") == "springsale:a1:bulk:postwire"
    assert unsubscribe.feedback_id([], "a1", "transactional") == "none:a1:transactional:postwire"
    raw = (b"From: a@b.test\r\nList-Unsubscribe: <https://theirs.test/u>,\r\n <mailto:out@b.test>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nSubject: s\r\n\r\nbody\r\n")
    out = unsubscribe.add_headers(raw, feedback="f:a:bulk:postwire", unsubscribe_url="https://h.test/u/T")
    assert out == (b"List-Unsubscribe: <https://h.test/u/T>, <mailto:out@b.test>\r\n"
                   b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFeedback-ID: f:a:bulk:postwire\r\n"
                   b"From: a@b.test\r\nSubject: s\r\n\r\nbody\r\n")
    own = b"Feedback-ID: mine\nSubject: s\n\nbody\n"
    assert unsubscribe.add_headers(own, feedback="f") == own  # the customer's own is kept, not doubled
    assert unsubscribe.list_id_of(b"List-Id: Weekly news\r\n <weekly.example>\r\n\r\nx") == "weekly.example"


async def test_a_send_asks_for_the_link_and_names_its_list(gateway: Any, account: NewCredentials,
                                                          inbound: Any) -> None:
    """`unsubscribe` and `list_id` in POST /v1/messages; `X-Postwire-Unsubscribe` and `List-Id` in raw
    MIME (the option header removed, the List-Id kept); both reach the router in SendOptions."""
    body = {"from": "shop@example.com", "to": ["a@example.org"], "subject": "Hi", "text": "hello",
            "unsubscribe": True, "list_id": "weekly.example"}
    sent = await gateway.http.post("/v1/messages", json=body, headers=gateway.auth(account))
    assert sent.status_code == 202, sent.text
    bad = await gateway.http.post("/v1/messages", json={**body, "list_id": "has space"},
                                  headers=gateway.auth(account))
    assert bad.status_code == 422
    raw = (b"From: shop@example.com\r\nTo: a@example.org\r\nSubject: Hi\r\nX-Postwire-Unsubscribe: yes\r\n"
           b"List-Id: Monthly <monthly.example>\r\n\r\nhello\r\n")
    r = await gateway.http.post("/v1/messages/mime", content=raw, headers=gateway.auth(
        account, **{"Content-Type": "message/rfc822"}))
    assert r.status_code == 202, r.text
    first, second = await inbound.read(account.account_id, 2)
    assert (first.options.unsubscribe, first.options.list_id, first.stream) == (True, "weekly.example",
                                                                                "transactional")
    assert (second.options.unsubscribe, second.options.list_id) == (True, "monthly.example")
    stored = second.body.inline
    assert b"X-Postwire-Unsubscribe" not in stored and b"List-Id: Monthly" in stored
