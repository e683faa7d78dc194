"""POST /v1/webhooks/{id}/test end to end: the real api-gateway queues the test event, the notifier
(run_notifier) signs and POSTs it to a real receiver on 127.0.0.1, as it does every event."""

# uses postwire.api_gateway: the test event is asked for through the real API, as customers do
from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest_asyncio
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.api_gateway.routes_webhooks import TEST_EVENT_TYPE
from postwire.api_gateway.service import serve as serve_gateway
from postwire.api_gateway.settings import ApiSettings
from postwire.core.events import EVENT_TYPES
from postwire.db.accounts import NewCredentials, create_account
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.testing.webhook_endpoint import running_receiver
from postwire.webhook_notifier import WebhookSettings, run_notifier
from postwire.webhook_notifier.webhook_signature import verify


@pytest_asyncio.fixture
async def api(nats_server: NatsServer, pg_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = ApiSettings(nats_url=nats_server.url, database_url=pg_url, http_port=0,
                           webhook_allow_http=True, webhook_allow_private=True)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_gateway(settings, stop, started=port.set_result))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{await port}", timeout=30,
                                 trust_env=False) as http:
        yield http
    stop.set()
    await task


@pytest_asyncio.fixture
async def notifier(nats_server: NatsServer, pg_url: str, js: JetStreamContext,
                   sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    settings = WebhookSettings(nats_url=nats_server.url, database_url=pg_url, webhook_allow_http=True,
                               webhook_allow_private=True, webhook_fetch_wait_s=0.2, webhook_reconcile_s=0.5,
                               webhook_cache_ttl_s=0.0)
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, js, sessions, stop))
    yield
    stop.set()
    await task


async def _account(sessions: async_sessionmaker[AsyncSession]) -> NewCredentials:
    async with sessions.begin() as s:
        return await create_account(s, f"whtest-{uuid.uuid4().hex[:10]}")


async def test_a_test_event_arrives_signed(api: httpx.AsyncClient, notifier: None,
                                           sessions: async_sessionmaker[AsyncSession]) -> None:
    creds = await _account(sessions)
    auth = {"Authorization": f"Bearer {creds.api_key}"}
    async with running_receiver() as receiver:
        # subscribed to bounces only: a test is sent whatever the endpoint subscribes to
        r = await api.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["bounced"]},
                           headers=auth)
        assert r.status_code == 201, r.text
        hook = r.json()
        before = datetime.now(UTC)
        r = await api.post(f"/v1/webhooks/{hook['id']}/test", headers=auth)
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["webhook_id"] == hook["id"] and queued["event_id"].startswith("test_")

        [(body, signature)] = await eventually(lambda: receiver.posts)
        assert verify(hook["secret"], body, signature)
        payload = json.loads(body)
        assert payload["webhook_id"] == hook["id"]
        event = payload["event"]
        assert {k: event[k] for k in ("id", "type", "message_id", "recipient", "tags", "metadata")} == {
            "id": queued["event_id"], "type": TEST_EVENT_TYPE, "message_id": "", "recipient": "",
            "tags": [], "metadata": {}}
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=1) <= at <= datetime.now(UTC)


async def test_another_accounts_webhook_is_not_found(api: httpx.AsyncClient,
                                                     sessions: async_sessionmaker[AsyncSession]) -> None:
    owner, other = await _account(sessions), await _account(sessions)
    r = await api.post("/v1/webhooks", json={"url": "https://1.1.1.1/hook"},
                       headers={"Authorization": f"Bearer {owner.api_key}"})
    hook_id = r.json()["id"]
    r = await api.post(f"/v1/webhooks/{hook_id}/test", headers={"Authorization": f"Bearer {other.api_key}"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await api.post("/v1/webhooks/wh_nope/test", headers={"Authorization": f"Bearer {owner.api_key}"})
    assert r.status_code == 404


def test_the_test_type_is_never_a_real_event_type() -> None:
    assert TEST_EVENT_TYPE not in EVENT_TYPES
