"""Webhooks end to end: the real api-gateway registers endpoints, events go through a real nats-server,
the notifier (run_notifier) POSTs them to real HTTP receivers on 127.0.0.1, PostgreSQL holds the rest."""

# uses postwire.api_gateway: endpoints are registered through the real API, as customers do
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats.errors
import pytest_asyncio
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from postwire.api_gateway.service import serve as serve_gateway
from postwire.api_gateway.settings import ApiSettings
from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_message_id
from postwire.core.ops import serve_app
from postwire.core.topology import EVENTS, WEBHOOKS
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.webhooks import AttemptRecord
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.webhook_notifier import WebhookSettings, run_notifier
from postwire.webhook_notifier.attempt_log import AttemptLog
from postwire.webhook_notifier.subscriptions import FANOUT_CONSUMER, covers
from postwire.webhook_notifier.webhook_signature import HEADER, verify

# ------------------------------------------------------------------------------------- receivers


@dataclass
class Receiver:
    """A real HTTP endpoint that records POSTs and can be told to fail, or to hold every answer until
    ``gate`` is set (an endpoint as slow as the test needs, with no clock in the assertion)."""

    status: int = 200
    gate: asyncio.Event | None = None
    requests: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""

    async def handle(self, request: Request) -> Response:
        self.attempts += 1
        body = await request.body()
        if self.gate is not None:
            await self.gate.wait()
        if 200 <= self.status < 300:
            self.requests.append((time.monotonic(), dict(request.headers), body))
        return Response(status_code=self.status)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(b)["event"] for _, _, b in self.requests]


MakeReceiver = Callable[..., Awaitable[Receiver]]


@pytest_asyncio.fixture
async def make_receiver() -> AsyncIterator[MakeReceiver]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def make(host: str = "127.0.0.1", **kw: Any) -> Receiver:
        rec = Receiver(**kw)
        app = Starlette(routes=[Route("/hook", rec.handle, methods=["POST"])])
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_app(app, "127.0.0.1", 0, stop, port.set_result))
        rec.url = f"http://{host}:{await port}/hook"
        stops.append((stop, task))
        return rec

    yield make
    for stop, task in stops:
        stop.set()
        await task


# -------------------------------------------------------------------------- gateway and notifier


@dataclass
class Api:
    http: httpx.AsyncClient

    async def create(self, creds: NewCredentials, url: str, event_types: list[str] | None = None,
                     expect: int = 201) -> dict[str, Any]:
        r = await self.http.post("/v1/webhooks", headers=auth(creds),
                                 json={"url": url, "event_types": event_types or []})
        assert r.status_code == expect, r.text
        return dict(r.json())


def auth(creds: NewCredentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {creds.api_key}"}


StartApi = Callable[..., Awaitable[Api]]


@pytest_asyncio.fixture
async def start_api(nats_server: NatsServer, pg_url: str) -> AsyncIterator[StartApi]:
    running: list[tuple[httpx.AsyncClient, asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Api:
        settings = ApiSettings(**{"nats_url": nats_server.url, "database_url": pg_url, "http_port": 0,
                                  "webhook_allow_http": True, "webhook_allow_private": True, **overrides})
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_gateway(settings, stop, started=port.set_result))
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{await port}", timeout=30, trust_env=False)
        running.append((http, stop, task))
        return Api(http)

    yield start
    for http, stop, task in running:
        await http.aclose()
        stop.set()
        await task


@pytest_asyncio.fixture
async def api(start_api: StartApi) -> Api:
    return await start_api()


MakeAccount = Callable[[], Awaitable[NewCredentials]]


@pytest_asyncio.fixture
async def make_account(sessions) -> MakeAccount:
    async def make() -> NewCredentials:
        async with sessions.begin() as s:
            return await create_account(s, f"wh-{uuid.uuid4().hex[:10]}")

    return make


StartNotifier = Callable[..., Awaitable[Callable[[], Awaitable[None]]]]


@pytest_asyncio.fixture
async def start_notifier(nats_server: NatsServer, pg_url: str, js, sessions) -> AsyncIterator[StartNotifier]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Callable[[], Awaitable[None]]:
        """Start a notifier; what it returns stops it."""
        settings = WebhookSettings(**{
            "nats_url": nats_server.url, "database_url": pg_url, "webhook_allow_http": True,
            "webhook_allow_private": True, "webhook_backoff_base_s": 0.1, "webhook_backoff_max_s": 0.5,
            "webhook_retry_window_s": 120.0, "webhook_fetch_wait_s": 0.2, "webhook_reconcile_s": 0.5,
            "webhook_cache_ttl_s": 0.0, "webhook_timeout_s": 10.0, **overrides})
        stop = asyncio.Event()
        task = asyncio.create_task(run_notifier(settings, js, sessions, stop))
        running.append((stop, task))

        async def halt() -> None:
            stop.set()
            await task

        return halt

    yield start
    for stop, task in running:
        stop.set()
        await task


async def _publish(js: JetStreamContext, account_id: str, n: int, type_: str = "delivered",
                   **fields: Any) -> list[str]:
    ids = []
    for i in range(n):
        ev = make_event(type_, account_id=account_id, message_id=new_message_id(),
                        recipient=f"r{i}@example.test", attempt=1, **fields)
        await publish_event(js, ev)
        ids.append(ev.event_id)
    return ids


async def _drained(js: JetStreamContext, webhook_id: str) -> bool:
    """Whether the endpoint has no delivery left, fresh or retry: WEBHOOKS is a work queue, so a
    delivery is a message there until its POST succeeded or it was parked."""
    info = await js.stream_info(WEBHOOKS, subjects_filter=f"webhooks.{webhook_id}.>")
    fresh = await js.stream_info(WEBHOOKS, subjects_filter=f"webhooks.{webhook_id}")
    return not (info.state.subjects or fresh.state.subjects)


# ------------------------------------------------------------------------------------------ tests


async def test_signed_post_arrives_and_verifies(api, js, make_account, make_receiver, start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver()
    hook = await api.create(creds, rec.url, ["bounced", "delivered"])
    assert hook["secret"].startswith("whsec_") and hook["event_types"] == ["bounced", "delivered"]
    await start_notifier()
    ev = make_event("bounced", account_id=creds.account_id, message_id=new_message_id(),
                    recipient="gone@example.test", smtp_code=550, enhanced_status="5.1.1",
                    response="5.1.1 user unknown", reason="userunknown", hardbounce=True,
                    remote_mta="mx.example.test", tags=["t1"], metadata={"k": "v"})
    await publish_event(js, ev)
    await _publish(js, creds.account_id, 1, "accepted")  # filtered out by event_types
    await eventually(lambda: rec.requests)
    _, headers, body = rec.requests[0]
    assert verify(hook["secret"], body, headers[HEADER.lower()])
    assert not verify("whsec_wrong", body, headers[HEADER.lower()])
    assert not verify(hook["secret"], body + b" ", headers[HEADER.lower()])
    payload = json.loads(body)
    assert payload["webhook_id"] == hook["id"] and headers["postwire-event-id"] == ev.event_id
    event = payload["event"]
    assert {k: event[k] for k in ("id", "type", "recipient", "reason", "hardbounce", "enhanced_status",
                                  "remote_mta", "tags", "metadata")} == {
        "id": ev.event_id, "type": "bounced", "recipient": "gone@example.test", "reason": "userunknown",
        "hardbounce": True, "enhanced_status": "5.1.1", "remote_mta": "mx.example.test", "tags": ["t1"],
        "metadata": {"k": "v"}}
    # a sentinel after the filtered event: the fan-out takes EVENTS in order, so once the sentinel is
    # delivered the accepted event has been decided
    [sentinel] = await _publish(js, creds.account_id, 1, "delivered")
    await eventually(lambda: sentinel in {e["id"] for e in rec.events()})
    assert sorted(e["type"] for e in rec.events()) == ["bounced", "delivered"]


async def test_clicked_subscription_gets_signed_clicks_with_details(api, js, make_account, make_receiver,
                                                                    start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver()
    hook = await api.create(creds, rec.url, ["clicked"])
    assert hook["event_types"] == ["clicked"]
    await start_notifier()
    mid, rcpt = new_message_id(), "reader@example.test"
    browser = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15"
    for ev in (make_event("opened", account_id=creds.account_id, message_id=mid, recipient=rcpt,
                          client_ip="203.0.113.9", user_agent=browser, unique=True),
               make_event("delivered", account_id=creds.account_id, message_id=mid, recipient=rcpt)):
        await publish_event(js, ev)  # not subscribed
    click = make_event("clicked", account_id=creds.account_id, message_id=mid, recipient=rcpt,
                       url="https://shop.example.test/offer?id=7", link_index=2, client_ip="203.0.113.9",
                       user_agent=browser, unique=True, tags=["promo"])
    await publish_event(js, click)
    await eventually(lambda: rec.requests)
    _, headers, body = rec.requests[0]
    assert verify(hook["secret"], body, headers[HEADER.lower()])
    assert headers["postwire-event-id"] == click.event_id
    event = json.loads(body)["event"]
    assert {k: event[k] for k in ("id", "type", "recipient", "url", "link_index", "client_ip", "user_agent",
                                  "unique", "tags")} == {
        "id": click.event_id, "type": "clicked", "recipient": rcpt,
        "url": "https://shop.example.test/offer?id=7", "link_index": 2, "client_ip": "203.0.113.9",
        "user_agent": browser, "unique": True, "tags": ["promo"]}
    sentinel = make_event("clicked", account_id=creds.account_id, message_id=new_message_id(),
                          recipient=rcpt, url="https://shop.example.test/")  # after the unsubscribed ones
    await publish_event(js, sentinel)
    await eventually(lambda: sentinel.event_id in {e["id"] for e in rec.events()})
    assert [e["type"] for e in rec.events()] == ["clicked", "clicked"]


async def test_only_events_some_webhook_wants_reach_the_notifier(api, js, make_account, make_receiver,
                                                                  start_notifier) -> None:
    """The fan-out's consumer is filtered to the subjects of accounts and types with webhooks: the
    events of every other account cost the notifier nothing."""
    with_hook, without = await make_account(), await make_account()
    rec = await make_receiver()
    await api.create(with_hook, rec.url, ["bounced"])
    await start_notifier()
    await _publish(js, without.account_id, 5)
    await _publish(js, with_hook.account_id, 3, "delivered")  # a type the webhook does not want
    [wanted] = await _publish(js, with_hook.account_id, 1, "bounced")
    await eventually(lambda: [e["id"] for e in rec.events()] == [wanted])
    info = await js.consumer_info(EVENTS, FANOUT_CONSUMER)
    filters = info.config.filter_subjects or [info.config.filter_subject]
    assert f"events.{with_hook.account_id}.bounced" in filters
    assert not any(covers(f, f"events.{without.account_id}.delivered") for f in filters)
    assert info.delivered.consumer_seq == 1  # of the nine events, only the wanted one was handed out


async def test_events_right_after_a_webhook_is_created_reach_it_once(api, js, make_account, make_receiver,
                                                                     start_notifier) -> None:
    """Events stored between a webhook's creation and the reconcile that widens the fan-out's filter are
    replayed to it; those read both ways are posted once."""
    creds = await make_account()
    rec = await make_receiver()
    await start_notifier()
    await eventually(lambda: _fanout_exists(js))
    await api.create(creds, rec.url)
    ids = await _publish(js, creds.account_id, 20)  # at once: most before the next reconcile
    ids += await _publish(js, creds.account_id, 1)
    await eventually(lambda: {e["id"] for e in rec.events()} == set(ids))
    sentinel = await _publish(js, creds.account_id, 1)  # live, after the replay
    await eventually(lambda: sentinel[0] in {e["id"] for e in rec.events()})
    assert sorted(e["id"] for e in rec.events()) == sorted(ids + sentinel), "lost or duplicated"


async def test_webhook_created_while_the_notifier_was_down_gets_the_events_since(
        api, js, make_account, make_receiver, start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver()
    stop = await start_notifier()
    await eventually(lambda: _fanout_exists(js))
    await stop()
    hook = await api.create(creds, rec.url)
    ids = await _publish(js, creds.account_id, 5)
    # meanwhile another replica, still with the old filter, asks for events: JetStream's scan for it
    # passes over these five, which the widened filter then no longer sees
    other_replica = await js.pull_subscribe_bind(durable=FANOUT_CONSUMER, stream=EVENTS)
    with contextlib.suppress(nats.errors.TimeoutError):
        assert await other_replica.fetch(1, timeout=0.5) == []
    await other_replica.unsubscribe()
    await start_notifier()
    await eventually(lambda: {e["id"] for e in rec.events()} == set(ids))
    await eventually(lambda: _drained(js, hook["id"]))
    assert sorted(e["id"] for e in rec.events()) == sorted(ids), "lost or duplicated"


async def _fanout_exists(js: JetStreamContext) -> bool:
    try:
        await js.consumer_info(EVENTS, FANOUT_CONSUMER)
    except NotFoundError:
        return False
    return True


async def test_endpoint_down_for_a_while_gets_everything_later(api, js, make_account, make_receiver,
                                                               start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver(status=503)
    hook = await api.create(creds, rec.url)
    await start_notifier()
    ids = await _publish(js, creds.account_id, 20)
    await eventually(lambda: rec.attempts >= 40)  # every delivery failed at least twice
    assert rec.requests == []
    rec.status = 200
    await eventually(lambda: {e["id"] for e in rec.events()} == set(ids))
    await eventually(lambda: _drained(js, hook["id"]))  # nothing left that could still be POSTed
    assert sorted(e["id"] for e in rec.events()) == sorted(ids), "lost or duplicated"


async def test_healthy_endpoint_gets_events_in_order(api, js, make_account, make_receiver,
                                                     start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver()
    await api.create(creds, rec.url)
    await start_notifier(webhook_concurrency=1)
    ids = await _publish(js, creds.account_id, 15)
    await eventually(lambda: len(rec.requests) == 15)
    assert [e["id"] for e in rec.events()] == ids


async def test_slow_endpoint_does_not_delay_another(api, js, make_account, make_receiver,
                                                    start_notifier) -> None:
    slow_account, fast_account = await make_account(), await make_account()
    held = asyncio.Event()
    slow, fast = await make_receiver(gate=held), await make_receiver()
    await api.create(slow_account, slow.url)
    await api.create(fast_account, fast.url)
    await start_notifier(webhook_concurrency=2)
    await _publish(js, slow_account.account_id, 10)
    await eventually(lambda: slow.attempts >= 1, timeout=20)  # the slow endpoint holds its first POST
    fast_ids = await _publish(js, fast_account.account_id, 10)
    await eventually(lambda: len(fast.requests) == 10, timeout=20)
    assert slow.requests == []  # every fast event went out while the slow endpoint still held its first
    assert sorted(e["id"] for e in fast.events()) == sorted(fast_ids)
    held.set()
    await eventually(lambda: len(slow.requests) == 10, timeout=30)


async def test_dead_letter_after_the_window_then_replay(api, js, make_account, make_receiver,
                                                        start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver(status=500)
    hook = await api.create(creds, rec.url)
    await start_notifier(webhook_retry_window_s=1.0)
    ids = await _publish(js, creds.account_id, 3)

    async def parked() -> list[dict[str, Any]] | None:
        r = await api.http.get(f"/v1/webhooks/{hook['id']}/dead-letters", headers=auth(creds))
        assert r.status_code == 200, r.text
        letters: list[dict[str, Any]] = r.json()["dead_letters"]
        return letters if len(letters) == 3 else None

    letters = await eventually(parked)
    assert {d["event_id"] for d in letters} == set(ids)
    # parked at the first failure after the 1 s window: how many attempts fit in it depends on the machine
    assert all(d["attempts"] >= 1 and d["last_error"] == "HTTP 500" for d in letters)
    assert {d["payload"]["event"]["id"] for d in letters} == set(ids)
    page = await api.http.get(f"/v1/webhooks/{hook['id']}/dead-letters", headers=auth(creds),
                              params={"limit": 2})
    rest = await api.http.get(f"/v1/webhooks/{hook['id']}/dead-letters", headers=auth(creds),
                              params={"limit": 2, "cursor": page.json()["next_cursor"]})
    assert len(page.json()["dead_letters"]) == 2 and len(rest.json()["dead_letters"]) == 1

    rec.status = 200
    one = await api.http.post(f"/v1/webhooks/{hook['id']}/dead-letters/replay", headers=auth(creds),
                              json={"ids": [letters[0]["id"]]})
    assert one.status_code == 202 and one.json() == {"replayed": 1}
    await eventually(lambda: len(rec.requests) == 1)
    assert rec.events()[0]["id"] == letters[0]["event_id"]
    rest_replay = await api.http.post(f"/v1/webhooks/{hook['id']}/dead-letters/replay", headers=auth(creds))
    assert rest_replay.json() == {"replayed": 2}
    await eventually(lambda: sorted(e["id"] for e in rec.events()) == sorted(ids))
    left = await api.http.get(f"/v1/webhooks/{hook['id']}/dead-letters", headers=auth(creds))
    assert left.json()["dead_letters"] == []


async def test_recent_deliveries_show_every_post_with_its_status(api, js, make_account, make_receiver,
                                                                  start_notifier) -> None:
    creds = await make_account()
    rec = await make_receiver(status=500)
    hook = await api.create(creds, rec.url)
    await start_notifier()
    [event_id] = await _publish(js, creds.account_id, 1, "bounced")
    await eventually(lambda: rec.attempts >= 2)
    rec.status = 200
    await eventually(lambda: rec.requests)

    async def logged() -> list[dict[str, Any]] | None:
        r = await api.http.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(creds))
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()["deliveries"]
        return rows if rows and rows[0]["outcome"] == "delivered" else None

    rows = await eventually(logged)
    assert {r["event_id"] for r in rows} == {event_id} and {r["event_type"] for r in rows} == {"bounced"}
    newest, *earlier = rows
    assert newest["http_status"] == 200 and newest["error"] == "" and newest["attempt"] == len(rows)
    assert [r["attempt"] for r in rows] == list(range(len(rows), 0, -1)), "newest first"
    assert earlier and all(r["outcome"] == "failed" and r["http_status"] == 500 and r["error"] == "HTTP 500"
                           for r in earlier)
    limited = await api.http.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(creds),
                                 params={"limit": 1})
    assert [r["attempt"] for r in limited.json()["deliveries"]] == [newest["attempt"]]


async def test_the_attempts_log_forgets_old_attempts_and_deleted_endpoints(api, sessions,
                                                                          make_account) -> None:
    creds = await make_account()
    kept = await api.create(creds, "https://127.0.0.1/a")
    deleted = await api.create(creds, "https://127.0.0.1/b")
    now = datetime.now(UTC)

    def record(webhook_id: str, age: timedelta) -> AttemptRecord:
        return AttemptRecord(webhook_id=webhook_id, account_id=creds.account_id, event_id=str(age),
                             event_type="delivered", attempt=1, outcome="delivered", http_status=200,
                             error="", duration_ms=3, at=now - age)

    assert (await api.http.delete(f"/v1/webhooks/{deleted['id']}", headers=auth(creds))).status_code == 204
    log = AttemptLog(sessions, flush_s=1.0, keep_days=7)
    for age in (timedelta(days=8), timedelta(days=6)):
        log.add_record(record(kept["id"], age))
    log.add_record(record(deleted["id"], timedelta(0)))  # deleted before the flush: left out, not an error
    await log.flush()
    await log.prune()
    r = await api.http.get(f"/v1/webhooks/{kept['id']}/deliveries", headers=auth(creds))
    assert [d["event_id"] for d in r.json()["deliveries"]] == [str(timedelta(days=6))]


async def test_registration_refuses_private_and_plain_http(start_api, make_account, make_receiver) -> None:
    strict = await start_api(webhook_allow_private=False, webhook_allow_http=False)
    creds = await make_account()
    rec = await make_receiver()
    for url in (rec.url, "https://127.0.0.1/hook", "https://localhost/hook", "https://[::1]/hook",
                "https://[::ffff:127.0.0.1]/hook", "https://10.1.2.3/hook", "https://169.254.169.254/",
                "https://[fe80::1]/", "https://224.0.0.1/", "https://0.0.0.0/", "https://100.64.0.1/",
                "ftp://example.com/", "https://user:pw@example.com/"):
        body = await strict.create(creds, url, expect=422)
        assert body["detail"][0]["loc"] == ["body", "url"] and body["detail"][0]["type"] == "unsafe_url", url
    http_only = await start_api(webhook_allow_private=True, webhook_allow_http=False)
    body = await http_only.create(creds, rec.url, expect=422)
    assert "https" in body["message"]
    assert (await http_only.create(creds, rec.url.replace("http://", "https://")))["id"]
    bad_type = await http_only.create(creds, "https://127.0.0.1/", ["delivered", "nope"], expect=422)
    assert bad_type["detail"][0]["type"] == "invalid_event_type"


async def test_delivery_refuses_a_host_resolving_to_loopback(api, js, make_account, make_receiver,
                                                             start_notifier) -> None:
    """Registered while private addresses were allowed; the notifier checks again before each POST."""
    creds = await make_account()
    rec = await make_receiver(host="localhost")
    hook = await api.create(creds, rec.url)
    await start_notifier(webhook_allow_private=False, webhook_retry_window_s=0.5)
    await _publish(js, creds.account_id, 1)

    async def parked() -> list[dict[str, Any]] | None:
        r = await api.http.get(f"/v1/webhooks/{hook['id']}/dead-letters", headers=auth(creds))
        return r.json()["dead_letters"] or None

    letters = await eventually(parked)
    assert letters[0]["last_error"].startswith("refused:") and "non-public" in letters[0]["last_error"]
    assert rec.attempts == 0


async def test_account_cannot_see_or_touch_another_accounts_webhooks(api, make_account) -> None:
    owner, other = await make_account(), await make_account()
    hook = await api.create(owner, "https://127.0.0.1/hook")
    listed = (await api.http.get("/v1/webhooks", headers=auth(owner))).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert (await api.http.get("/v1/webhooks", headers=auth(other))).json() == {"webhooks": []}
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/dead-letters"), ("GET", "/deliveries"),
                         ("POST", "/dead-letters/replay")):
        r = await api.http.request(method, f"/v1/webhooks/{hook['id']}{path}", headers=auth(other))
        assert r.status_code == 404, (method, path, r.text)
    assert (await api.http.get(f"/v1/webhooks/{hook['id']}", headers=auth(owner))).status_code == 200
    assert (await api.http.delete(f"/v1/webhooks/{hook['id']}", headers=auth(owner))).status_code == 204
    assert (await api.http.get(f"/v1/webhooks/{hook['id']}", headers=auth(owner))).status_code == 404
