"""GET /v1/events/template/{id or name} and ``templateid`` on SMTPeter's events, over real HTTP and
PostgreSQL: the messages of a stored template as the recorder leaves them (a messages row per recipient
id with the template, the template on the accepted events only), then listed by the template's id and
name, refused to another account, and shown on every event of those messages whatever the listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.smtpeter import recipient_ids
from postwire.core.events import make_event
from postwire.core.ids import new_message_id
from postwire.db import templates
from postwire.db.accounts import NewCredentials
from postwire.db.models import Message
from postwire.v1 import envelope_pb2

from .conftest import Gateway, MakeAccount, event_row

Sessions = async_sessionmaker[AsyncSession]
CONTENT = {"subject": "Welcome {$name}", "from": "shop@example.com", "text": "Hello {$name}"}


def _token(creds: NewCredentials) -> dict[str, str]:
    return {"access_token": creds.api_key}


async def _sent(sessions: Sessions, account_id: str, rcpt_ids: dict[str, str], template_id: int | None,
                at: datetime, *outcomes: tuple[str, str, dict[str, Any]]) -> None:
    """One message to ``rcpt_ids`` as the recorder stores it: a messages row and an accepted event per
    recipient id (the template on both), then ``outcomes`` (type, recipient, fields), which the services
    that report them write without the template."""
    async with sessions.begin() as s:
        events: list[envelope_pb2.Event] = []
        for rcpt, mid in rcpt_ids.items():
            s.add(Message(id=mid, account_id=account_id, mail_from="shop@example.com", subject="Welcome",
                          size=10, source="api", tags=["welcome"], metadata_={}, template_id=template_id))
            events.append(make_event("accepted", account_id=account_id, message_id=mid, recipient=rcpt,
                                     mail_from="shop@example.com", tags=["welcome"],
                                     template_id=template_id or 0))
        for i, (type_, rcpt, fields) in enumerate(outcomes, start=1):
            events.append(make_event(type_, account_id=account_id, message_id=rcpt_ids[rcpt], recipient=rcpt,
                                     tags=["welcome"], **fields))
            events[-1].at.FromDatetime(at + timedelta(minutes=i))
        for ev in events[:len(rcpt_ids)]:
            ev.at.FromDatetime(at)
        await s.flush()
        for ev in events:
            await s.execute(event_row(ev))


async def test_events_of_a_template_by_id_and_name_with_templateid(gateway: Gateway, account: NewCredentials,
                                                                   make_account: MakeAccount,
                                                                   sessions: Sessions) -> None:
    aid = account.account_id
    async with sessions.begin() as s:
        welcome = await templates.create(s, aid, "welcome", CONTENT)
        other_template = await templates.create(s, aid, "reminder", CONTENT)
    tid = welcome.id
    now = datetime.now(UTC)
    sent = now - timedelta(hours=2)
    ids = recipient_ids(new_message_id(), ["ann@example.org", "bob@example.org"])
    await _sent(sessions, aid, ids, tid, sent,
                ("delivered", "ann@example.org", {"attempt": 1, "smtp_code": 250}),
                ("bounced", "bob@example.org", {"smtp_code": 550, "reason": "userunknown",
                                                "hardbounce": True}),
                ("clicked", "ann@example.org", {"url": "https://example.com/a", "unique": True}))
    old = recipient_ids(new_message_id(), ["old@example.org"])  # more than a month ago
    await _sent(sessions, aid, old, tid, now - timedelta(days=40))
    plain = recipient_ids(new_message_id(), ["cy@example.org"])  # written in the send itself
    await _sent(sessions, aid, plain, None, sent, ("delivered", "cy@example.org", {"smtp_code": 250}))
    reminder = recipient_ids(new_message_id(), ["dee@example.org"])
    await _sent(sessions, aid, reminder, other_template.id, sent)

    async def get(path: str, creds: NewCredentials = account, **params: str) -> Any:
        r = await gateway.http.get(f"/v1/events/{path}", params={**_token(creds), **params})
        assert r.status_code == 200, r.text
        return r.json()

    # no start or end: the last month, as for an address or tags
    by_id = await get(f"template/{tid}")
    assert [(e["event"], e["recipient"]) for e in by_id] == [
        ("attempt", "ann@example.org"), ("attempt", "bob@example.org"), ("delivery", "ann@example.org"),
        ("bounce", "bob@example.org"), ("click", "ann@example.org")]
    for e in by_id:  # at the top level, as client libraries read it, and in data, as documented
        assert e["templateid"] == e["data"]["templateid"] == tid
        assert {k: e[k] for k in e["data"]} == e["data"]
    assert {e["id"] for e in by_id} == set(ids.values())
    assert await get("template/welcome") == by_id
    start = (now - timedelta(days=45)).strftime("%Y-%m-%d")
    assert [e["recipient"] for e in await get(f"template/{tid}", start=start)] == ["old@example.org"]
    assert len(await get(f"template/{tid}", tags="welcome")) == 5
    assert await get(f"template/{tid}", tags="other") == []
    assert [e["recipient"] for e in await get(f"template/{other_template.id}")] == ["dee@example.org"]

    # any listing: every event of a template's message carries it, the others null
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    for rcpt, mid in ids.items():
        listed = await get(f"messageid/{mid}", start=day)
        assert listed and all(e["templateid"] == e["data"]["templateid"] == tid for e in listed), rcpt
    written = await get(f"messageid/{plain['cy@example.org']}", start=day)
    assert [e["templateid"] for e in written] == [None, None]
    by_tag = {e["recipient"]: e["templateid"] for e in await get("tags/welcome")}
    assert by_tag == {"ann@example.org": tid, "bob@example.org": tid, "cy@example.org": None,
                      "dee@example.org": other_template.id}
    # and Postwire's own events API shows it on the accepted events
    r = await gateway.http.get("/v1/events", params={**_token(account), "message_id": ids["ann@example.org"],
                                                     "type": "accepted"})
    assert [e["template_id"] for e in r.json()["events"]] == [tid]

    # unknown references, and another account's template: 404, by id and by name
    theirs = await make_account()
    async with sessions.begin() as s:
        own = await templates.create(s, theirs.account_id, "welcome", CONTENT)
    for creds, ref in ((account, "nosuch"), (account, str(own.id)), (account, "9" * 18), (account, "9" * 30),
                       (account, "²"), (account, "a b"), (theirs, str(tid))):
        r = await gateway.http.get(f"/v1/events/template/{ref}", params=_token(creds))
        assert r.status_code == 404, (ref, r.text)
        assert r.json()["error"] == "not_found"
    assert await get("template/welcome", theirs) == []  # its own template of that name: none sent
    assert await get("tags/welcome", theirs) == []
    assert await get(f"messageid/{ids['ann@example.org']}", theirs, start=day) == []

    # a deleted template's events stay reachable by its id; its name is free again
    async with sessions.begin() as s:
        assert await templates.delete(s, aid, tid)
    assert await get(f"template/{tid}") == by_id
    r = await gateway.http.get("/v1/events/template/welcome", params=_token(account))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    # a kind SMTPeter does not have is still refused
    r = await gateway.http.get(f"/v1/events/campaign/{tid}", params=_token(account))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "kind"]
