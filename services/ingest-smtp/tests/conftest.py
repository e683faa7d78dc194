"""ingest-smtp under test: the real server in-process on loopback, a real nats-server and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest_asyncio
from nats.js import JetStreamContext

from postwire.db.accounts import NewCredentials, create_account
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.ingest_smtp.service import serve
from postwire.ingest_smtp.settings import IngestSmtpSettings
from postwire.testing.nats import NatsServer
from postwire.testing.ports import free_port


@dataclass
class Ingest:
    port: int
    ops_port: int
    settings: IngestSmtpSettings
    stop: asyncio.Event
    task: asyncio.Task[None]


StartIngest = Callable[..., Awaitable[Ingest]]


@pytest_asyncio.fixture
async def start_ingest(nats_server: NatsServer, pg_url: str, tmp_path: Path) -> AsyncIterator[StartIngest]:
    """Start ``serve`` with test defaults overridden by keyword arguments; stopped at teardown."""
    running: list[Ingest] = []

    async def start(**overrides: Any) -> Ingest:
        defaults: dict[str, Any] = dict(
            nats_url=nats_server.url, database_url=pg_url, data_dir=tmp_path / "data", smtp_port=0,
            smtp_hostname="smtp.postwire.test", ops_port=free_port(), smtp_allow_insecure_auth=True,
            inline_body_max=64 * 1024, shutdown_grace_s=30.0,
        )
        settings = IngestSmtpSettings(**{**defaults, **overrides})
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(settings, stop, started=port.set_result))
        await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # startup failed: raise its error here
        ingest = Ingest(port.result(), settings.ops_port, settings, stop, task)
        running.append(ingest)
        return ingest

    yield start
    for ingest in running:
        ingest.stop.set()
        await ingest.task


@pytest_asyncio.fixture
async def account(pg_url: str) -> NewCredentials:
    """A fresh account (committed) with its SMTP login, allowed to send From any domain (the check of
    From domains has its own tests: test_from_domains.py)."""
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as session:
            creds = await create_account(session, f"ingest-{uuid.uuid4().hex[:10]}",
                                         allow_unverified_from=True)
            await session.commit()
    finally:
        await engine.dispose()
    return creds


@pytest_asyncio.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A separate client, as the router would be, to read what ingest-smtp queued."""
    nc = await nats.connect(nats_server.url)
    yield nc.jetstream()
    await nc.close()
