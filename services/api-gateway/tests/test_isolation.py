"""Account isolation: account B tries every read and write path of the API on account A's data.

A's data is seeded through the API (suppressions, a domain, a webhook, sends with an Idempotency-Key)
and the way the other services write it (message status rows and events as the recorder inserts them,
the resend archive as the dispatcher stores it, a webhook dead letter as the notifier parks it). B then
calls every /v1 route with A's ids, names, addresses and tags and must get 404 or an empty answer, its
own writes must land in its own account only, and everything A sees is unchanged afterwards.

The routes are enumerated from the app, so a route added without an isolation check here fails
``test_every_route_is_covered``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.smtpeter import recipient_ids
from postwire.core.archive import archive
from postwire.core.bodies import BodyStore
from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import WEBHOOKS
from postwire.db import bulk_pause
from postwire.db.accounts import NewCredentials
from postwire.db.models import Message, Recipient, WebhookDeadLetter
from postwire.v1 import envelope_pb2

from .conftest import Gateway, Inbound, MakeAccount, event_row, offline_app

TAG = "iso-a"
RCPT = "reader@example.org"
SHARED = "shared@example.org"
ONLY_A = "only-a@example.org"
KEY = "same-idempotency-key-for-both"  # A and B use the same Idempotency-Key
TEMPLATE = {"name": "iso-template", "subject": "A's {$x}", "from": "a@example.com", "text": "A's {$x}"}

# routes that hold no account's data: the tracking and unsubscribe tokens are their own authority (signed,
# opaque; test_unsubscribe.py shows another account's token suppresses nothing here), probes
NOT_ACCOUNT_SCOPED = {"GET /t/c/{token}", "GET /t/o/{token}", "GET /u/{token}", "POST /u/{token}",
                      "GET /healthz", "GET /readyz", "GET /metrics"}


@dataclass
class World:
    gw: Gateway
    a: NewCredentials
    b: NewCredentials
    inbound: Inbound
    message_id: str = ""  # A's message (status rows, events, archive)
    rcpt_ids: dict[str, str] = field(default_factory=dict)
    domain: str = ""
    webhook_id: str = ""
    dead_letter_id: str = ""
    template_id: int = 0
    sent_by_a: list[str] = field(default_factory=list)  # ids A's sends were answered with

    async def b_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.gw.auth(self.b), **kwargs.pop("headers", {})}
        return await self.gw.http.request(method, path, headers=headers, **kwargs)


Check = Callable[[World], Awaitable[None]]
CHECKS: dict[str, Check] = {}


def covers(*routes: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        for route in routes:
            CHECKS[route] = check
        return check
    return register


def _routes() -> set[str]:
    """Every API route of the app as "METHOD /path" (FastAPI nests included routers: walk them). The
    console's pages are left out: they take the account from the session, never from the request, and
    test_console.py checks them as another account's user."""
    return {f"{method} {ctx.path}" for ctx in iter_route_contexts(offline_app().routes)
            if isinstance(ctx.original_route, APIRoute) and not ctx.path.startswith("/console")
            for method in ctx.original_route.methods}


def _not_found(r: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "not_found"


# ------------------------------------------------------------------------------------------ sending


def _json_message(text: str) -> dict[str, Any]:
    return {"from": "b@example.com", "to": [RCPT], "subject": "from B", "text": text, "tags": [TAG]}


async def _only_b_queued(w: World, answer_ids: set[str]) -> None:
    """What B's send queued is on B's INBOUND subject, under B's account, with ids A never got."""
    env = (await w.inbound.read(w.b.account_id, 1))[0]
    assert env.account_id == w.b.account_id and env.message_id in answer_ids
    assert not answer_ids & set(w.sent_by_a)


@covers("POST /v1/messages")
async def send_json(w: World) -> None:
    r = await w.b_call("POST", "/v1/messages", json=_json_message("b"), headers={"Idempotency-Key": KEY})
    assert r.status_code == 202, r.text  # A's stored answer for the same key is not B's
    assert "Idempotent-Replayed" not in r.headers
    await _only_b_queued(w, {r.json()["id"]})


@covers("POST /v1/messages/mime")
async def send_mime(w: World) -> None:
    raw = f"From: b@example.com\r\nTo: {RCPT}\r\nSubject: from B\r\n\r\nb\r\n".encode()
    r = await w.b_call("POST", "/v1/messages/mime", content=raw,
                       headers={"Content-Type": "message/rfc822", "Idempotency-Key": KEY + "-mime"})
    assert r.status_code == 202, r.text
    assert "Idempotent-Replayed" not in r.headers
    await _only_b_queued(w, {r.json()["id"]})


@covers("POST /v1/send")
async def send_smtpeter(w: World) -> None:
    body = {"recipient": RCPT, "from": "b@example.com", "subject": "from B", "text": "b"}
    r = await w.b_call("POST", "/v1/send", json=body, headers={"Idempotency-Key": KEY + "-send"})
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers
    await _only_b_queued(w, set(r.json()))
    # A's template, by id or by name, does not exist for B: nothing is built from it
    before = await w.inbound.count()
    for ref in (w.template_id, TEMPLATE["name"]):
        for path, send in (("/v1/send", {"recipient": RCPT, "template": ref, "data": {"x": 1}}),
                           ("/v1/messages", {"to": [RCPT], "template": ref})):
            r = await w.b_call("POST", path, json=send)
            assert r.status_code == 422 and r.json()["detail"][0]["type"] == "unknown_template", r.text
    assert await w.inbound.count() == before


@covers("POST /v1/resend")
async def resend(w: World) -> None:
    before = await w.inbound.count()
    for mid in (w.message_id, *w.rcpt_ids.values()):
        _not_found(await w.b_call("POST", "/v1/resend", json={"message": mid}))
    assert await w.inbound.count() == before  # nothing queued


@covers(*(f"GET /v1/{call}/{{message_id}}" for call in (
    "recipient", "envelope", "text", "html", "headers", "header", "mime", "attachments", "embeds")),
    "GET /v1/attachments/{message_id}/{name_or_rank}", "GET /v1/embeds/{message_id}/{name_or_rank}")
async def archived_message_calls(w: World) -> None:
    for mid in (w.message_id, *w.rcpt_ids.values()):
        for call in ("recipient", "envelope", "text", "html", "headers", "header", "mime", "attachments",
                     "embeds", "attachments/{id}/0", "embeds/{id}/0"):
            url = f"/v1/{call.replace('{id}', mid)}" if "{id}" in call else f"/v1/{call}/{mid}"
            _not_found(await w.b_call("GET", url))


@covers("POST /v1/template/{format}", "POST /v1/templates", "GET /v1/templates",
        "GET /v1/templates/{start}/{length}")
async def templates_of_its_own(w: World) -> None:
    # B may use A's template name for its own; its list shows only its own
    for path, name in (("/v1/template/json", "b-smtpeter"), ("/v1/templates", "b-own")):
        r = await w.b_call("POST", path, json={**TEMPLATE, "name": name})
        assert r.status_code == 201, r.text
    r = await w.b_call("POST", "/v1/templates", json={**TEMPLATE, "subject": "B's"})
    assert r.status_code == 201, r.text  # the same name as A's: names are per account
    ids = {t["id"] for t in (await w.b_call("GET", "/v1/templates")).json()["templates"]}
    assert w.template_id not in ids and len(ids) == 3
    assert w.template_id not in {t["id"] for t in (await w.b_call("GET", "/v1/templates/0/1000")).json()}


@covers("GET /v1/template/{ref}", "GET /v1/template/{ref}/{format}", "PUT /v1/template/{format}",
        "DELETE /v1/template/{ref}", "GET /v1/templates/{ref}", "PUT /v1/templates/{ref}",
        "DELETE /v1/templates/{ref}", "GET /v1/templates/{ref}/versions",
        "GET /v1/templates/{ref}/versions/{version}", "POST /v1/templates/{ref}/preview")
async def template_by_ref(w: World) -> None:
    tid = w.template_id
    for method, path, body in (
            ("GET", f"/v1/template/{tid}", None), ("GET", f"/v1/template/{tid}/html", None),
            ("PUT", "/v1/template/json", {**TEMPLATE, "id": tid}), ("DELETE", f"/v1/template/{tid}", None),
            ("GET", f"/v1/templates/{tid}", None), ("PUT", f"/v1/templates/{tid}", TEMPLATE),
            ("DELETE", f"/v1/templates/{tid}", None), ("GET", f"/v1/templates/{tid}/versions", None),
            ("GET", f"/v1/templates/{tid}/versions/1", None),
            ("POST", f"/v1/templates/{tid}/preview", {"data": {"x": 1}})):
        _not_found(await w.b_call(method, path, json=body))


# ------------------------------------------------------------------------------------------ reading


@covers("GET /v1/messages/{message_id}")
async def message_status(w: World) -> None:
    for mid in (w.message_id, *w.sent_by_a):
        _not_found(await w.b_call("GET", f"/v1/messages/{mid}"))


@covers("GET /v1/events")
async def events(w: World) -> None:
    for params in ({}, {"message_id": w.message_id}, {"recipient": RCPT}, {"tag": TAG},
                   {"type": "accepted,delivered,bounced"}):
        r = await w.b_call("GET", "/v1/events", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["events"] == [], params


@covers("GET /v1/bounces")
async def bounces(w: World) -> None:
    r = await w.b_call("GET", "/v1/bounces", params={"message_id": w.message_id})
    assert r.status_code == 200 and r.json()["events"] == []
    r = await w.b_call("GET", "/v1/bounces", params={"format": "csv"})
    assert r.status_code == 200 and len(list(csv.reader(io.StringIO(r.text)))) == 1  # the header only


def _all_zero(stats: dict[str, Any]) -> None:
    assert set(stats["totals"].values()) == {0}
    assert all(n == 0 for day in stats["stats"] for k, n in day.items() if k != "day")


@covers("GET /v1/stats")
async def stats(w: World) -> None:
    for params in ({}, {"tag": TAG}):
        r = await w.b_call("GET", "/v1/stats", params=params)
        assert r.status_code == 200, r.text
        _all_zero(r.json())


@covers("GET /v1/stats/{tag}")
async def stats_by_tag(w: World) -> None:
    r = await w.b_call("GET", f"/v1/stats/{TAG}")
    assert r.status_code == 200, r.text
    _all_zero(r.json())


@covers("GET /v1/events/{kind}/{value}")
async def smtpeter_events(w: World) -> None:
    for kind, value in (("messageid", w.message_id), ("messageid", w.rcpt_ids[SHARED]), ("email", RCPT),
                        ("tags", TAG)):
        r = await w.b_call("GET", f"/v1/events/{kind}/{value}")
        assert r.status_code == 200 and r.json() == [], (kind, r.text)
    _not_found(await w.b_call("GET", f"/v1/events/template/{w.template_id}"))
    # by name: 404, or B's own template of that name (templates_of_its_own makes one), with no events
    r = await w.b_call("GET", f"/v1/events/template/{TEMPLATE['name']}")
    assert r.status_code == 404 or (r.status_code == 200 and r.json() == []), r.text


# ------------------------------------------------------------------------------------- suppressions


@covers("GET /v1/suppressions")
async def suppressions_list(w: World) -> None:
    for params in ({}, {"q": "only"}, {"reason": "unsubscribe"}):
        r = await w.b_call("GET", "/v1/suppressions", params=params)
        assert r.status_code == 200 and r.json()["suppressions"] == [], params


@covers("GET /v1/suppressions/export.csv")
async def suppressions_export(w: World) -> None:
    r = await w.b_call("GET", "/v1/suppressions/export.csv")
    assert r.status_code == 200 and r.text.strip().splitlines()[1:] == []


@covers("GET /v1/suppressions/{address}")
async def suppression_get(w: World) -> None:
    _not_found(await w.b_call("GET", f"/v1/suppressions/{ONLY_A}"))
    _not_found(await w.b_call("GET", f"/v1/suppressions/{SHARED}"))


@covers("POST /v1/suppressions", "DELETE /v1/suppressions/{address}")
async def suppression_write(w: World) -> None:
    _not_found(await w.b_call("DELETE", f"/v1/suppressions/{ONLY_A}"))
    # B's own entry for an address A suppressed too: B's to add and to remove, A's stays (snapshot)
    r = await w.b_call("POST", "/v1/suppressions", json={"address": SHARED, "reason": "manual"})
    assert r.status_code == 201 and r.json()["reason"] == "manual"
    assert (await w.b_call("DELETE", f"/v1/suppressions/{SHARED}")).status_code == 204
    _not_found(await w.b_call("DELETE", f"/v1/suppressions/{SHARED}"))


# ------------------------------------------------------------------------------------------ domains


@covers("GET /v1/domains")
async def domains_list(w: World) -> None:
    r = await w.b_call("GET", "/v1/domains")
    assert r.status_code == 200 and r.json() == {"domains": []}


@covers("GET /v1/domains/{name}", "PATCH /v1/domains/{name}", "DELETE /v1/domains/{name}",
        "GET /v1/domains/{name}/check", "POST /v1/domains/{name}/verify")
async def domain_by_name(w: World) -> None:
    for name in (w.domain, w.domain.upper()):
        _not_found(await w.b_call("GET", f"/v1/domains/{name}"))
        _not_found(await w.b_call("GET", f"/v1/domains/{name}/check"))
        _not_found(await w.b_call("POST", f"/v1/domains/{name}/verify"))
        _not_found(await w.b_call("PATCH", f"/v1/domains/{name}", json={"tracking_host": "t.evil.example"}))
        _not_found(await w.b_call("DELETE", f"/v1/domains/{name}"))


@covers("POST /v1/domains")
async def domain_create(w: World) -> None:
    # names are unique across accounts (one key signs a domain): B cannot take over A's
    r = await w.b_call("POST", "/v1/domains", json={"name": w.domain, "dkim_algorithm": "ed25519-sha256"})
    assert r.status_code == 409 and r.json()["error"] == "domain_exists"


# ----------------------------------------------------------------------------------------- webhooks


@covers("GET /v1/webhooks", "POST /v1/webhooks")
async def webhooks_list_and_create(w: World) -> None:
    r = await w.b_call("GET", "/v1/webhooks")
    assert r.status_code == 200 and r.json() == {"webhooks": []}
    r = await w.b_call("POST", "/v1/webhooks", json={"url": "https://1.1.1.1/b-hook"})
    assert r.status_code == 201, r.text
    r = await w.b_call("GET", "/v1/webhooks")
    assert [h["url"] for h in r.json()["webhooks"]] == ["https://1.1.1.1/b-hook"]


@covers("GET /v1/webhooks/{webhook_id}", "DELETE /v1/webhooks/{webhook_id}",
        "GET /v1/webhooks/{webhook_id}/dead-letters", "POST /v1/webhooks/{webhook_id}/dead-letters/replay",
        "POST /v1/webhooks/{webhook_id}/test", "GET /v1/webhooks/{webhook_id}/deliveries")
async def webhook_by_id(w: World) -> None:
    hook = f"/v1/webhooks/{w.webhook_id}"
    _not_found(await w.b_call("GET", hook))
    _not_found(await w.b_call("POST", f"{hook}/test"))
    _not_found(await w.b_call("GET", f"{hook}/dead-letters"))
    _not_found(await w.b_call("GET", f"{hook}/deliveries"))
    _not_found(await w.b_call("POST", f"{hook}/dead-letters/replay", json={"ids": [w.dead_letter_id]}))
    _not_found(await w.b_call("POST", f"{hook}/dead-letters/replay"))
    _not_found(await w.b_call("DELETE", hook))
    # B's own webhook cannot reach A's dead letter either
    own = (await w.b_call("GET", "/v1/webhooks")).json()["webhooks"][0]["id"]
    r = await w.b_call("POST", f"/v1/webhooks/{own}/dead-letters/replay", json={"ids": [w.dead_letter_id]})
    assert r.status_code == 202 and r.json() == {"replayed": 0}
    # B's test event is queued for B's webhook, and nothing ever was for A's
    r = await w.b_call("POST", f"/v1/webhooks/{own}/test")
    assert r.status_code == 202 and r.json()["webhook_id"] == own
    queued = await w.inbound.js.stream_info(WEBHOOKS, subjects_filter="webhooks.>")
    assert set(queued.state.subjects or {}) == {f"webhooks.{own}"}


# --------------------------------------------------------------------------------------------- test


def _dmarc_report(domain: str) -> bytes:
    """A small RFC 7489 aggregate report about ``domain``."""
    return f"""<?xml version="1.0"?><feedback><report_metadata><org_name>reporter.example</org_name>
<email>dmarc@reporter.example</email><report_id>iso-{domain}</report_id>
<date_range><begin>1765000000</begin><end>1765086399</end></date_range></report_metadata>
<policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>none</p><sp>none</sp><pct>100</pct>
</policy_published><record><row><source_ip>192.0.2.1</source_ip><count>3</count><policy_evaluated>
<disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
<identifiers><header_from>{domain}</header_from></identifiers><auth_results><dkim><domain>{domain}</domain>
<selector>s1</selector><result>pass</result></dkim><spf><domain>{domain}</domain><result>pass</result></spf>
</auth_results></record></feedback>""".encode()


@covers("POST /v1/dmarc/reports", "GET /v1/dmarc/reports", "GET /v1/dmarc/summary", "GET /v1/dmarc",
        "GET /v1/dmarc/{day}/{reporter}/{domain}", "GET /v1/dmarc/{day}/{reporter}/{domain}/{index}")
async def dmarc_reports(w: World) -> None:
    # B cannot file a report about A's domain, nor read or summarise A's
    r = await w.b_call("POST", "/v1/dmarc/reports", content=_dmarc_report(w.domain),
                       headers={"Content-Type": "application/xml"})
    assert r.status_code == 422 and r.json()["error"] == "unknown_domain", r.text
    r = await w.b_call("GET", "/v1/dmarc/reports", params={"domain": w.domain})
    assert r.status_code == 200 and r.json()["reports"] == []
    period = {"start": "2025-12-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    r = await w.b_call("GET", "/v1/dmarc/summary", params={"domain": w.domain, **period})
    assert r.status_code == 200 and r.json()["sources"] == []
    r = await w.b_call("GET", "/v1/dmarc")
    assert r.status_code == 200 and r.json() == []
    for path in (f"/v1/dmarc/2025-12-06/reporter.example/{w.domain}",
                 f"/v1/dmarc/2025-12-06/reporter.example/{w.domain}/0"):
        _not_found(await w.b_call("GET", path))


@covers("GET /v1/data-requests", "GET /v1/data-requests/{address}", "DELETE /v1/data-requests/{address}",
        "POST /v1/datarequest", "POST /v1/datarequest/{email}", "GET /v1/datarequest/{request_id}",
        "GET /v1/datarequest/{request_id}/status")
async def data_requests(w: World) -> None:
    # B's export and erasure of the addresses A mailed find nothing, and change nothing of A's
    for address in (RCPT, SHARED):
        r = await w.b_call("GET", f"/v1/data-requests/{address}")
        assert r.status_code == 200, r.text
        found = r.json()
        assert [found[k] for k in ("messages", "events", "archived")] == [[], [], []], address
    r = await w.b_call("DELETE", f"/v1/data-requests/{SHARED}")
    assert r.status_code == 200 and set(r.json()["erased"].values()) == {0}, r.text
    # A's SMTPeter-style request is not B's to read; B's own one holds nothing of A's
    r = await w.gw.http.post("/v1/datarequest", json={"email": RCPT}, headers=w.gw.auth(w.a))
    assert r.status_code == 200, r.text
    a_request = r.json()["id"]
    _not_found(await w.b_call("GET", f"/v1/datarequest/{a_request}"))
    _not_found(await w.b_call("GET", f"/v1/datarequest/{a_request}/status"))
    for r in (await w.b_call("POST", "/v1/datarequest", json={"email": RCPT}),
              await w.b_call("POST", f"/v1/datarequest/{RCPT}")):
        assert r.status_code == 200, r.text
        data = await w.b_call("GET", f"/v1/datarequest/{r.json()['id']}")
        assert data.status_code == 200 and data.json()["data"] == [[], [], [], []]
    listed = (await w.b_call("GET", "/v1/data-requests")).json()["data_requests"]
    assert a_request not in {d["id"] for d in listed} and len(listed) == 5  # 2 exports, 1 erasure, 2 POSTs


@covers("GET /v1/account/bulk", "POST /v1/account/bulk/resume")
async def account_bulk(w: World) -> None:
    # A's bulk lane is paused (seeded): B sees its own state, and B's resume leaves A paused
    r = await w.b_call("GET", "/v1/account/bulk")
    assert r.status_code == 200 and r.json()["paused"] is False
    r = await w.b_call("POST", "/v1/account/bulk/resume")
    assert r.status_code == 200 and r.json()["resumed"] is False
    r = await w.gw.http.get("/v1/account/bulk", headers=w.gw.auth(w.a))
    assert r.json()["paused"] is True


def test_every_route_is_covered() -> None:
    routes = _routes()
    assert len(routes) > 30 and "GET /v1/messages/{message_id}" in routes  # the walk found them
    missing = sorted(r for r in routes - NOT_ACCOUNT_SCOPED - set(CHECKS))
    assert not missing, f"routes without an isolation check in test_isolation.py: {missing}"
    assert not set(CHECKS) - routes, "checks for routes that no longer exist"


async def _seed(w: World, sessions: async_sessionmaker[AsyncSession], js: JetStreamContext) -> None:
    gw, h = w.gw, w.gw.auth(w.a)
    # through the API
    for address, reason in ((ONLY_A, "unsubscribe"), (SHARED, "complaint")):
        r = await gw.http.post("/v1/suppressions", json={"address": address, "reason": reason}, headers=h)
        assert r.status_code == 201, r.text
    w.domain = f"iso-{new_id().lower()}.example"
    r = await gw.http.post("/v1/domains", json={"name": w.domain, "dkim_algorithm": "ed25519-sha256"},
                           headers=h)
    assert r.status_code == 201, r.text
    r = await gw.http.patch(f"/v1/domains/{w.domain}", json={"tracking_host": f"t.{w.domain}"}, headers=h)
    assert r.status_code == 200, r.text
    r = await gw.http.post("/v1/dmarc/reports", content=_dmarc_report(w.domain),
                           headers={**h, "Content-Type": "application/xml"})
    assert r.status_code == 201, r.text
    r = await gw.http.post("/v1/webhooks", json={"url": "https://1.1.1.1/a-hook"}, headers=h)
    assert r.status_code == 201, r.text
    w.webhook_id = r.json()["id"]
    r = await gw.http.post("/v1/templates", json=TEMPLATE, headers=h)
    assert r.status_code == 201, r.text
    w.template_id = r.json()["id"]
    r = await gw.http.post("/v1/messages", json={**_json_message("a"), "from": "a@example.com"},
                           headers={**h, "Idempotency-Key": KEY})
    assert r.status_code == 202, r.text
    w.sent_by_a.append(r.json()["id"])
    for suffix in ("-mime", "-send"):  # the same keys B uses next: B must not get these answers
        r = await gw.http.post("/v1/send", json={"recipient": RCPT, "from": "a@example.com", "text": "a"},
                               headers={**h, "Idempotency-Key": KEY + suffix})
        assert r.status_code == 200, r.text
        w.sent_by_a += list(r.json())
    # as the other services write it: status rows and events (recorder), archive (dispatcher), dead
    # letter (notifier)
    w.message_id = new_message_id()
    w.rcpt_ids = recipient_ids(w.message_id, [RCPT, SHARED])
    at = datetime.now(UTC) - timedelta(hours=1)
    async with sessions.begin() as s:
        for mid in w.rcpt_ids.values():  # a message row per recipient id, built from A's template
            s.add(Message(id=mid, account_id=w.a.account_id, mail_from="a@example.com", subject="A's",
                          size=10, source="api", tags=[TAG], metadata_={"k": "v"}, template_id=w.template_id))
        s.add(Recipient(message_id=w.message_id, address=RCPT, account_id=w.a.account_id, status="delivered",
                        smtp_code=250, attempts=1, updated_at=at))
        for type_, extra in (("accepted", {"mail_from": "a@example.com", "subject": "A's", "source": "api",
                                           "template_id": w.template_id}),
                             ("delivered", {"smtp_code": 250}),
                             ("bounced", {"smtp_code": 550, "reason": "userunknown", "hardbounce": True}),
                             ("opened", {"unique": True})):
            for rcpt in (RCPT, SHARED):
                ev = make_event(type_, account_id=w.a.account_id, message_id=w.rcpt_ids[rcpt], recipient=rcpt,
                                tags=[TAG], **extra)
                ev.at.FromDatetime(at)
                await s.execute(event_row(ev))
        w.dead_letter_id = new_id("dl_")
        s.add(WebhookDeadLetter(id=w.dead_letter_id, webhook_id=w.webhook_id, account_id=w.a.account_id,
                                event_id=f"{w.message_id}.bounced.0.{RCPT}", payload={"type": "bounced"},
                                last_error="HTTP 500", attempts=7, created_at=at, parked_at=at))
    raw = f"From: a@example.com\r\nTo: {RCPT}\r\nSubject: A's\r\n\r\nA's body\r\n".encode()
    stored = envelope_pb2.InboundMessage(
        message_id=w.message_id, account_id=w.a.account_id, mail_from="a@example.com",
        recipients=[RCPT, SHARED], source="api", subject="A's", tags=[TAG], recipient_ids=w.rcpt_ids)
    stored.body.CopyFrom(await BodyStore(js, 1 << 20).put(f"{w.message_id}/original", raw))
    await archive(js, stored)

    async def publish(ev: envelope_pb2.Event) -> None:
        await publish_event(js, ev)

    async with sessions() as s:  # last: A's own bulk mail above is not held
        assert await bulk_pause.pause(s, w.a.account_id, "isolation test", publish) is not None


async def _a_view(w: World) -> dict[str, Any]:
    """Everything account A can read, for a before/after comparison."""
    gw, h = w.gw, w.gw.auth(w.a)
    start = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    gets: dict[str, tuple[str, dict[str, Any]]] = {
        "message": (f"/v1/messages/{w.message_id}", {}),
        "events": ("/v1/events", {"limit": 1000}),
        "bounces": ("/v1/bounces", {}),
        "stats": ("/v1/stats", {"start": start}),
        "stats_tag": (f"/v1/stats/{TAG}", {"start": start}),
        "by_id": (f"/v1/events/messageid/{w.rcpt_ids[SHARED]}", {}),
        "by_email": (f"/v1/events/email/{RCPT}", {}),
        "by_tag": (f"/v1/events/tags/{TAG}", {}),
        "by_template": (f"/v1/events/template/{w.template_id}", {}),
        "suppressions": ("/v1/suppressions", {}),
        "suppression": (f"/v1/suppressions/{SHARED}", {}),
        "domains": ("/v1/domains", {}),
        "domain": (f"/v1/domains/{w.domain}", {}),
        "webhooks": ("/v1/webhooks", {}),
        "webhook": (f"/v1/webhooks/{w.webhook_id}", {}),
        "dead_letters": (f"/v1/webhooks/{w.webhook_id}/dead-letters", {}),
        "templates": ("/v1/templates", {}),
        "template": (f"/v1/templates/{w.template_id}", {}),
        "template_versions": (f"/v1/templates/{w.template_id}/versions", {}),
    }
    view: dict[str, Any] = {}
    for name, (path, params) in gets.items():
        r = await gw.http.get(path, params=params, headers=h)
        assert r.status_code == 200, (path, r.text)
        view[name] = r.json()
    r = await gw.http.get("/v1/suppressions/export.csv", headers=h)
    view["export"] = r.text
    return view


async def test_b_never_sees_or_changes_a(gateway: Gateway, make_account: MakeAccount, inbound: Inbound,
                                         js: JetStreamContext,
                                         sessions: async_sessionmaker[AsyncSession]) -> None:
    w = World(gateway, await make_account(), await make_account(), inbound)
    await _seed(w, sessions, js)
    before = await _a_view(w)
    # the seeding is visible to A, so an empty answer to B below means isolation, not missing data
    assert len(before["events"]["events"]) == 8 and before["stats"]["totals"]["bounces"] == 2
    assert len(before["by_tag"]) == 8 and len(before["suppressions"]["suppressions"]) == 2
    assert len(before["by_template"]) == 8 and {e["templateid"] for e in before["by_tag"]} == {w.template_id}
    assert before["dead_letters"]["dead_letters"][0]["id"] == w.dead_letter_id
    assert before["domain"]["tracking_host"] == f"t.{w.domain}"

    for check in dict.fromkeys(CHECKS.values()):  # each once, in the order they are written above
        await check(w)

    assert await _a_view(w) == before
    # and A's own sends are still A's: the same key answers A with A's first answer
    r = await gateway.http.post("/v1/messages", json={**_json_message("a"), "from": "a@example.com"},
                                headers={**gateway.auth(w.a), "Idempotency-Key": KEY})
    assert r.status_code == 202 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["id"] == w.sent_by_a[0]
