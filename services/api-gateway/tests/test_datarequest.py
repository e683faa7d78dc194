"""Data subject requests (export, erasure, SMTPeter's two-step export) through the real gateway, against a
real PostgreSQL and the real archive, TRACKING and SUPPRESSIONS buckets on a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.smtpeter import recipient_ids
from postwire.core import tracking
from postwire.core.archive import archive, load
from postwire.core.bodies import BodyStore
from postwire.core.events import make_event
from postwire.core.ids import new_message_id
from postwire.core.topology import TRACKING
from postwire.db.accounts import NewCredentials
from postwire.db.data_requests import pseudonym
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import DataRequest, Event, EventCount, Message, Recipient
from postwire.db.suppressions import SuppressionMirror, hashed_address
from postwire.v1 import envelope_pb2

from .conftest import Gateway, MakeAccount, event_row, offline_app

JANE = "Jane.Doe@Example.org"
BOB = "bob@example.org"
BIG = b"x" * 4096  # over the test store's inline limit: kept in the BODIES bucket


@pytest_asyncio.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@dataclass
class Sent:
    """What one account holds about JANE: a message to her and Bob, one to her alone."""

    shared: str  # the stored (group) id of the message to both
    jane_shared: str  # JANE's own id of it
    bob_shared: str
    alone: str  # the message to her alone (its body in the BODIES bucket)
    alone_body: envelope_pb2.Body


def _mime(to: str, text_: str) -> bytes:
    return (f"From: Shop <shop@example.com>\r\nTo: {to}\r\nSubject: Your order\r\n\r\n{text_}\r\n").encode()


async def _send(js: JetStreamContext, sessions: async_sessionmaker[AsyncSession],
                creds: NewCredentials) -> Sent:
    """As the router archives and the recorder stores two messages, their events and JANE's tracking."""
    account, bodies = creds.account_id, BodyStore(js, 1024)
    shared = new_message_id()
    ids = recipient_ids(shared, [BOB, JANE])
    group = envelope_pb2.InboundMessage(message_id=shared, account_id=account, mail_from="shop@example.com",
                                        recipients=[BOB, JANE], source="api", subject="Your order",
                                        recipient_ids=ids)
    group.body.CopyFrom(await bodies.put(f"{shared}/original", _mime("customers", "Hello both")))
    await archive(js, group)
    alone = new_message_id()
    single = envelope_pb2.InboundMessage(message_id=alone, account_id=account, mail_from="shop@example.com",
                                         recipients=[JANE], source="api", subject="Jane, your invoice",
                                         recipient_ids={JANE: alone})
    single.body.CopyFrom(await bodies.put(f"{alone}/original", _mime(JANE, "Dear Jane") + BIG))
    await archive(js, single)
    kv = await js.key_value(TRACKING)
    await kv.put(shared, tracking.TrackedMessage(account_id=account, links=["https://example.com/x?u=jane"],
                                                 recipients=[BOB, JANE], message_ids=ids).to_bytes())
    async with sessions.begin() as s:
        for mid, subject in ((ids[BOB], "Your order"), (ids[JANE], "Your order"), (alone, "Jane, invoice")):
            s.add(Message(id=mid, account_id=account, mail_from="shop@example.com", subject=subject, size=10,
                          source="api", tags=["orders"], metadata_={"user_id": "42"}))
        await s.flush()
        for mid, rcpt in ((ids[BOB], BOB), (ids[JANE], JANE), (alone, JANE)):
            s.add(Recipient(message_id=mid, address=rcpt, account_id=account, status="delivered",
                            smtp_code=250, response=f"250 2.0.0 OK <{rcpt.lower()}>",
                            mx_host="mx.example.org", attempts=1, updated_at=func.now()))
        events = [make_event("accepted", account_id=account, message_id=ids[BOB], recipient=BOB,
                             subject="Your order", tags=["orders"]),
                  make_event("delivered", account_id=account, message_id=ids[BOB], recipient=BOB,
                             response="250 OK"),
                  make_event("accepted", account_id=account, message_id=ids[JANE], recipient=JANE,
                             subject="Your order", tags=["orders"], metadata={"user_id": "42"}),
                  make_event("delivered", account_id=account, message_id=ids[JANE], recipient=JANE,
                             smtp_code=250, response="250 2.0.0 OK <jane.doe@example.org>", tags=["orders"]),
                  make_event("opened", account_id=account, message_id=ids[JANE], recipient=JANE,
                             client_ip="203.0.113.7", user_agent="Thunderbird/128", unique=True,
                             tags=["orders"]),
                  make_event("clicked", account_id=account, message_id=ids[JANE], recipient=JANE,
                             url="https://example.com/x?u=jane", client_ip="203.0.113.7",
                             user_agent="Thunderbird/128", unique=True, tags=["orders"]),
                  make_event("failed", account_id=account, message_id=alone, recipient=JANE, smtp_code=550,
                             response="550 5.1.1 <jane.doe@example.org>: no such user", reason="userunknown",
                             hardbounce=True, tags=["orders"])]
        for ev in events:
            await s.execute(event_row(ev))
    return Sent(shared, ids[JANE], ids[BOB], alone, single.body)


async def _suppress(gw: Gateway, creds: NewCredentials, address: str) -> None:
    r = await gw.http.post("/v1/suppressions", json={"address": address, "reason": "userunknown"},
                           headers=gw.auth(creds))
    assert r.status_code == 201, r.text


async def _export(gw: Gateway, creds: NewCredentials, address: str = JANE) -> dict[str, Any]:
    r = await gw.http.get(f"/v1/data-requests/{address}", headers=gw.auth(creds))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_the_export_holds_messages_events_tracking_suppression_and_archived_copies(
        gateway: Gateway, account: NewCredentials, make_account: MakeAccount, js: JetStreamContext,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    sent = await _send(js, sessions, account)
    await _suppress(gateway, account, JANE)
    stranger = await make_account()  # the same address in another account: never in this export
    theirs = await _send(js, sessions, stranger)

    body = await _export(gateway, account, "JANE.doe@example.ORG")
    assert body["address"] == "jane.doe@example.org"
    assert {m["id"] for m in body["messages"]} == {sent.jane_shared, sent.alone}
    assert {m["recipient"]["status"] for m in body["messages"]} == {"delivered"}
    assert all(m["subject"] and m["metadata"] == {"user_id": "42"} for m in body["messages"])
    types = [e["type"] for e in body["events"]]
    assert sorted(types) == ["accepted", "clicked", "delivered", "failed", "opened"]
    opened = next(e for e in body["events"] if e["type"] == "opened")
    assert (opened["client_ip"], opened["user_agent"]) == ("203.0.113.7", "Thunderbird/128")
    assert [(s["address"], s["erased"]) for s in body["suppressions"]] == [("jane.doe@example.org", False)]
    copies = {c["message_id"]: c for c in body["archived"]}
    assert set(copies) == {sent.jane_shared, sent.alone}
    assert "Hello both" in copies[sent.jane_shared]["content"]
    assert copies[sent.alone]["content"].startswith("From: Shop")
    assert copies[sent.alone]["encoding"] == "utf-8"
    assert not any(body["truncated"].values())
    every_id = {m["id"] for m in body["messages"]} | {e["message_id"] for e in body["events"]}
    assert not every_id & {theirs.jane_shared, theirs.alone}

    r = await gateway.http.get("/v1/data-requests", headers=gateway.auth(account))
    audit = r.json()["data_requests"]
    assert [(a["kind"], a["subject"]) for a in audit] == [("export", pseudonym(account.account_id, JANE))]
    assert audit[0]["counts"] == {"messages": 2, "events": 5, "suppressions": 1, "archived": 2}
    assert audit[0]["requested_by"] == account.api_key.split("_")[1]
    assert (await gateway.http.get(f"/v1/data-requests/{JANE}")).status_code == 401
    bad = await gateway.http.get("/v1/data-requests/nobody", headers=gateway.auth(account))
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "invalid_address"


async def test_erasure_anonymises_everything_keeps_the_suppression_and_spares_other_accounts(
        gateway: Gateway, account: NewCredentials, make_account: MakeAccount, js: JetStreamContext,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    sent = await _send(js, sessions, account)
    await _suppress(gateway, account, JANE)
    stranger = await make_account()
    await _send(js, sessions, stranger)
    await _suppress(gateway, stranger, JANE)
    account_id, alias = account.account_id, pseudonym(account.account_id, JANE)

    async def counts() -> list[tuple[Any, ...]]:
        async with sessions() as s:
            rows = await s.execute(select(EventCount.tag, EventCount.domain, EventCount.day, EventCount.type,
                                          EventCount.n, EventCount.unique_n)
                                   .where(EventCount.account_id == account_id).order_by(text("1, 2, 3, 4")))
            return [tuple(r) for r in rows]

    before = await counts()
    before_stranger = await _export(gateway, stranger)
    r = await gateway.http.delete(f"/v1/data-requests/{JANE}", headers=gateway.auth(account))
    assert r.status_code == 200, r.text
    erased = r.json()
    assert erased["subject"] == alias
    assert erased["erased"] == {"events": 5, "recipients": 2, "messages": 2, "suppressions": 1,
                                "webhook_log": 0, "tracking": 1, "archived": 3}

    async with sessions() as s:  # PostgreSQL: nothing names her, the counts are as they were
        events = list(await s.scalars(select(Event).where(Event.account_id == account_id,
                                                          Event.recipient == alias)))
        assert len(events) == 5
        for ev in events:
            assert ev.event_id.endswith("." + alias)
            assert not {"response", "client_ip", "user_agent", "url", "subject"} & set(ev.data)
            assert ev.data["metadata"] == {} and ev.data["tags"] == ["orders"]
        assert {e.data.get("unique") for e in events if e.type in ("opened", "clicked")} == {True}
        rcpts = list(await s.scalars(select(Recipient).where(Recipient.account_id == account_id)))
        assert sorted(r.address for r in rcpts) == sorted([BOB, alias, alias])
        assert all(r.response is None for r in rcpts if r.address == alias)
        alone = await s.get(Message, sent.alone)
        assert alone is not None and (alone.subject, alone.metadata_) == ("", {})
        for table, column in (("events", "recipient"), ("recipients", "address"),
                              ("suppressions", "address"), ("data_requests", "address")):
            named = await s.scalar(text(f"SELECT count(*) FROM {table} WHERE account_id = :a "
                                        f"AND lower({column}::text) = 'jane.doe@example.org'"),
                                   {"a": account_id})
            assert named == 0, table
        leaks = await s.scalar(text("SELECT count(*) FROM events WHERE account_id = :a "
                                    "AND (data::text ILIKE '%jane%' OR event_id ILIKE '%jane%')"),
                               {"a": account_id})
        assert leaks == 0
        audit = (await s.scalars(select(DataRequest).where(DataRequest.account_id == account_id,
                                                           DataRequest.kind == "erasure"))).one()
        assert audit.address is None and audit.subject == alias and audit.counts == erased["erased"]
        assert "jane" not in str(audit.counts).lower() and audit.requested_by in account.api_key
    assert await counts() == before

    # the address stays suppressed: the router asks the bucket by the recipient's address (lookup_many)
    mirror = SuppressionMirror(js)
    hit = await mirror.lookup_many(account_id, [JANE])
    assert hit[JANE].reason == "userunknown" and hit[JANE].address == hashed_address(JANE)
    r = await gateway.http.get(f"/v1/suppressions/{JANE}", headers=gateway.auth(account))
    assert r.status_code == 200 and r.json()["address"] == hashed_address(JANE)
    listed = (await gateway.http.get("/v1/suppressions", headers=gateway.auth(account))).json()
    assert [e["address"] for e in listed["suppressions"]] == [hashed_address(JANE)]

    # NATS: her own copies are gone, Bob's is there without her, the tracking entry names her pseudonym
    auth = gateway.auth(account)
    assert (await gateway.http.get(f"/v1/mime/{sent.jane_shared}", headers=auth)).status_code == 404
    assert (await gateway.http.get(f"/v1/mime/{sent.alone}", headers=auth)).status_code == 404
    bob = await gateway.http.get(f"/v1/mime/{sent.bob_shared}", headers=auth)
    assert bob.status_code == 200 and b"Hello both" in bob.content
    group = await load(js, sent.shared)
    assert group is not None and list(group.recipients) == [BOB] and JANE not in group.recipient_ids
    try:
        await BodyStore(js, 1024).get(sent.alone_body)
        raise AssertionError("the body of a message to her alone was kept")
    except ObjectNotFoundError:
        pass
    entry = tracking.TrackedMessage.from_bytes((await (await js.key_value(TRACKING)).get(sent.shared)).value
                                               or b"")
    assert entry.recipients == [BOB, alias] and set(entry.message_ids) == {BOB, alias}

    # nothing left to export; a second erasure finds nothing and answers the same shape
    after = await _export(gateway, account)
    assert (after["messages"], after["events"], after["archived"]) == ([], [], [])
    assert [(e["address"], e["erased"]) for e in after["suppressions"]] == [(hashed_address(JANE), True)]
    again = await gateway.http.delete(f"/v1/data-requests/{JANE}", headers=gateway.auth(account))
    assert again.status_code == 200
    assert again.json()["erased"] == {k: 0 for k in erased["erased"]}

    # the other account's data for the same address is untouched
    unchanged = await _export(gateway, stranger)
    for section in ("messages", "events", "suppressions", "archived"):
        assert unchanged[section] == before_stranger[section], section
    assert (await mirror.lookup(stranger.account_id, JANE)) is not None


async def test_a_bounce_after_erasure_renews_the_hashed_entry(
        gateway: Gateway, account: NewCredentials, sessions: async_sessionmaker[AsyncSession],
        js: JetStreamContext) -> None:
    from postwire.db import suppressions

    await _suppress(gateway, account, JANE)
    assert (await gateway.http.delete(f"/v1/data-requests/{JANE}", headers=gateway.auth(account))
            ).status_code == 200
    async with sessions.begin() as s:  # what the recorder does for a hard bounce
        info = await suppressions.add(s, account.account_id, JANE, "mailboxfull", "bounce")
    assert info.address == hashed_address(JANE) and info.reason == "mailboxfull"
    async with sessions() as s:
        assert await suppressions.is_suppressed_many(s, account.account_id, [JANE]) == {JANE.lower()}
    r = await gateway.http.delete(f"/v1/suppressions/{JANE}", headers=gateway.auth(account))
    assert r.status_code == 204  # the customer can still lift it
    assert await SuppressionMirror(js).lookup(account.account_id, JANE) is None


async def test_smtpeters_two_step_export(gateway: Gateway, account: NewCredentials,
                                         make_account: MakeAccount, js: JetStreamContext,
                                         sessions: async_sessionmaker[AsyncSession]) -> None:
    sent = await _send(js, sessions, account)
    token = {"access_token": account.api_key}
    r = await gateway.http.post("/v1/datarequest", params=token, data={"email": JANE})
    assert r.status_code == 200, r.text
    request_id = r.json()["id"]
    path = await gateway.http.post(f"/v1/datarequest/{JANE}", params=token)
    assert path.status_code == 200 and path.json()["id"] != request_id
    status = await gateway.http.get(f"/v1/datarequest/{request_id}/status", params=token)
    assert status.json() == {"id": request_id, "status": "finished"}
    data = await gateway.http.get(f"/v1/datarequest/{request_id}", params=token)
    assert data.status_code == 200, data.text
    body = data.json()
    assert body["info"] == {"type": "email", "id": "jane.doe@example.org"}
    messages, events, suppressed, copies = body["data"]
    assert {m["id"] for m in messages} == {sent.jane_shared, sent.alone} and len(events) == 5
    assert suppressed == [] and len(copies) == 2

    stranger = {"access_token": (await make_account()).api_key}
    assert (await gateway.http.get(f"/v1/datarequest/{request_id}", params=stranger)).status_code == 404
    refused = await gateway.http.post("/v1/datarequest", params=token,
                                      json={"email": JANE, "monitor": "https://example.com/hook"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "monitor"]
    assert (await gateway.http.post("/v1/datarequest", params=token, json={})).status_code == 422

    await gateway.http.delete(f"/v1/data-requests/{JANE}", params=token)
    gone = await gateway.http.get(f"/v1/datarequest/{request_id}", params=token)
    assert gone.status_code == 404  # the erasure took the address the request kept


def test_the_routes_are_documented() -> None:
    paths = offline_app().openapi()["paths"]
    assert {"get", "delete"} <= set(paths["/v1/data-requests/{address}"])
    assert "post" in paths["/v1/datarequest"] and "get" in paths["/v1/datarequest/{request_id}"]
