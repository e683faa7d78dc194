"""api-gateway under test: serve() in-process on a loopback port, a real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from types import SimpleNamespace
from typing import Any, cast

import httpx
import nats
import pytest_asyncio
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from sqlalchemy.dialects.postgresql import insert

from postwire.api_gateway.app import create_app
from postwire.api_gateway.deps import Deps
from postwire.api_gateway.service import serve
from postwire.api_gateway.settings import ApiSettings
from postwire.core.lanes import STREAMS
from postwire.core.topology import INBOUND, inbound_subject
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.events_query import event_proto_data
from postwire.db.models import Event
from postwire.testing.nats import NatsServer
from postwire.v1 import envelope_pb2


@dataclass
class Gateway:
    http: httpx.AsyncClient
    settings: ApiSettings
    stop: asyncio.Event
    task: asyncio.Task[None]

    def auth(self, creds: NewCredentials, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {creds.api_key}", **headers}


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest_asyncio.fixture
async def start_gateway(nats_server: NatsServer, pg_url: str) -> AsyncIterator[StartGateway]:
    """Start ``serve`` with test settings overridden by keyword arguments; stopped at teardown."""
    running: list[Gateway] = []

    async def start(**overrides: Any) -> Gateway:
        defaults: dict[str, Any] = dict(nats_url=nats_server.url, database_url=pg_url, http_port=0,
                                        message_id_domain="api.postwire.test", publish_timeout_s=2.0)
        settings = ApiSettings(**{**defaults, **overrides})
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(settings, stop, started=port.set_result))
        await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # startup failed: raise its error here
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.result()}", timeout=30)
        gw = Gateway(http, settings, stop, task)
        running.append(gw)
        return gw

    yield start
    for gw in running:
        await gw.http.aclose()
        gw.stop.set()
        await gw.task


@pytest_asyncio.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


MakeAccount = Callable[..., Awaitable[NewCredentials]]


@pytest_asyncio.fixture
async def make_account(pg_url: str) -> AsyncIterator[MakeAccount]:
    """Accounts isolate tests sharing the session's database: each test makes its own. They may send
    From any domain unless a test asks for the default (test_from_domains.py)."""
    engine = make_engine(pg_url)

    async def make(*, allow_unverified_from: bool = True) -> NewCredentials:
        async with make_sessionmaker(engine).begin() as s:
            return await create_account(s, f"api-{uuid.uuid4().hex[:10]}",
                                        allow_unverified_from=allow_unverified_from)

    yield make
    await engine.dispose()


@pytest_asyncio.fixture
async def account(make_account: MakeAccount) -> NewCredentials:
    return await make_account()


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A separate client, standing in for the router that consumes INBOUND."""
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


class Inbound:
    """Reads the INBOUND stream as the router would (each test has its own nats-server)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def count(self) -> int:
        return int((await self.js.stream_info(INBOUND)).state.messages)

    async def read(self, account_id: str, n: int = 1) -> list[envelope_pb2.InboundMessage]:
        """Consume ``n`` envelopes of this account (a pull consumer, acked, then deleted)."""
        name = f"test-{uuid.uuid4().hex[:8]}"
        # both lanes' subjects (postwire.core.lanes): a message to several recipients travels as bulk
        lanes = ConsumerConfig(filter_subjects=[inbound_subject(account_id, lane) for lane in STREAMS])
        sub = await self.js.pull_subscribe("", durable=name, stream=INBOUND, config=lanes)
        out: list[envelope_pb2.InboundMessage] = []
        while len(out) < n:
            for msg in await sub.fetch(n - len(out), timeout=10):
                env = envelope_pb2.InboundMessage()
                env.ParseFromString(msg.data)
                out.append(env)
                await msg.ack_sync()  # confirmed before the consumer goes: else it is delivered again
        await sub.unsubscribe()
        await self.js.delete_consumer(INBOUND, name)  # a work-queue stream allows one consumer per subject
        return out


@pytest_asyncio.fixture
async def inbound(js: JetStreamContext) -> Inbound:
    return Inbound(js)


def offline_app() -> FastAPI:
    """The app without connections, for what does not need them: its routes and its OpenAPI schema
    (create_app does no I/O, and neither depends on the dependencies)."""
    settings = ApiSettings(verp_secret="offline-" + "x" * 40)
    return create_app(cast(Deps, SimpleNamespace(settings=settings, sessions=None, limits=None)))


def event_row(ev: envelope_pb2.Event) -> Any:
    """The INSERT the recorder makes for one event (the events table)."""
    return insert(Event).values(
        event_id=ev.event_id, account_id=ev.account_id, message_id=ev.message_id, recipient=ev.recipient,
        type=ev.type, at=ev.at.ToDatetime(tzinfo=UTC), data=event_proto_data(ev)).on_conflict_do_nothing()
