"""Two api-gateway and two ingest-smtp replicas (each service's ``serve`` twice, in this process) on one
real nats-server and PostgreSQL: the per-account rate limit and send quota, and the SMTP per-IP limits,
hold across the replicas. In every case the second replica refuses once what the *first* used has
exhausted the shared limit; with per-replica counters it would still have had its own allowance.

Clients are real: httpx over HTTP, and a hand-driven SMTP client whose source address (127.0.0.x)
stands for a client IP (the loopback exemption is switched off)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from postwire.api_gateway import service as api_service
from postwire.api_gateway.settings import ApiSettings
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.ingest_smtp import service as ingest_service
from postwire.ingest_smtp.settings import IngestSmtpSettings
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.testing.ports import free_port

pytestmark = pytest.mark.slow  # two replicas of two services

Serve = Callable[..., Awaitable[None]]


@asynccontextmanager
async def replicas(serve: Serve, settings: list[Any]) -> AsyncIterator[list[int]]:
    """Run ``serve`` once per settings (one replica each); yields their ports; stops them all."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    ports: list[int] = []
    try:
        for s in settings:
            stop = asyncio.Event()
            port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(serve(s, stop, started=port.set_result))
            running.append((stop, task))
            await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # failed to start: raise its error
            ports.append(port.result())
        yield ports
    finally:
        for stop, _ in running:
            stop.set()
        await asyncio.gather(*(task for _, task in running))


MakeAccount = Callable[[], Awaitable[NewCredentials]]


@pytest_asyncio.fixture
async def make_account(pg_url: str) -> AsyncIterator[MakeAccount]:
    engine = make_engine(pg_url)

    async def make() -> NewCredentials:
        async with make_sessionmaker(engine).begin() as s:
            return await create_account(s, f"replicas-{uuid.uuid4().hex[:10]}", allow_unverified_from=True)

    yield make
    await engine.dispose()


# --- api-gateway ------------------------------------------------------------------------------------------


def bearer(creds: NewCredentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {creds.api_key}"}


def message(n: int) -> dict[str, Any]:
    to = [f"r{i}@example.org" for i in range(n)]
    return {"from": "a@example.com", "to": to, "subject": "s", "text": "t"}


async def test_rate_limit_and_send_quota_hold_across_two_gateways(nats_server: NatsServer, pg_url: str,
                                                                  make_account: MakeAccount) -> None:
    settings = ApiSettings(nats_url=nats_server.url, database_url=pg_url, http_port=0,
                           message_id_domain="replicas.postwire.test",
                           api_rate_per_s=0.001, api_burst=6, api_send_quota_per_hour=5)
    async with replicas(api_service.serve, [settings, settings]) as ports:
        a, b = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", timeout=30) for p in ports)
        try:
            # request rate, bursts of 6: 5 requests on a, 1 on b, and b refuses its second
            rate = await make_account()
            for gw in (a, a, a, a, a, b):
                assert (await gw.get("/v1/domains", headers=bearer(rate))).status_code == 200
            for gw in (b, a):
                r = await gw.get("/v1/domains", headers=bearer(rate))
                assert r.status_code == 429 and r.json()["error"] == "rate_limited", r.text
                assert int(r.headers["Retry-After"]) >= 1
            # send quota, 5 recipients an hour: 3 through a, 2 through b, then neither takes one more
            quota = await make_account()
            assert (await a.post("/v1/messages", json=message(3), headers=bearer(quota))).status_code == 202
            assert (await b.post("/v1/messages", json=message(2), headers=bearer(quota))).status_code == 202
            for gw in (b, a):
                r = await gw.post("/v1/messages", json=message(1), headers=bearer(quota))
                assert r.status_code == 429 and r.json()["error"] == "send_quota_exceeded", r.text
                assert int(r.headers["Retry-After"]) >= 1
        finally:
            await a.aclose()
            await b.aclose()


# --- ingest-smtp ------------------------------------------------------------------------------------------


class Smtp:
    """One SMTP connection from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str) -> Smtp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self) -> tuple[int, str]:
        """The next reply (the last line of a multi-line one); (0, "") when the server hung up."""
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 30)).decode().rstrip("\r\n")
            if not line:
                return 0, ""
            if line[3:4] != "-":
                return int(line[:3]), line[4:]

    async def cmd(self, line: str) -> tuple[int, str]:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def login(self, username: str, password: str) -> int:
        assert (await self.cmd("EHLO client.example.com"))[0] == 250
        token = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        return (await self.cmd(f"AUTH PLAIN {token}"))[0]

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


async def greeting(port: int, source: str) -> tuple[int, str]:
    """Connect, read the greeting (220, or the 421 of a limit), say QUIT and close."""
    c = await Smtp.open(port, source)
    try:
        greeted = await c.reply()
        if greeted[0] == 220:
            assert (await c.cmd("QUIT"))[0] == 221
        return greeted
    finally:
        await c.close()


async def test_smtp_per_ip_limits_hold_across_two_ingest_replicas(nats_server: NatsServer, pg_url: str,
                                                                  tmp_path: Path,
                                                                  make_account: MakeAccount) -> None:
    def settings(n: int) -> IngestSmtpSettings:
        return IngestSmtpSettings(
            nats_url=nats_server.url, database_url=pg_url, data_dir=tmp_path / f"ingest-{n}", smtp_port=0,
            ops_port=free_port(), smtp_hostname="smtp.replicas.test", smtp_allow_insecure_auth=True,
            smtp_limit_exempt_networks="", smtp_connection_rate_per_ip=3, smtp_max_connections_per_ip=2,
            smtp_auth_failures_per_ip=3, smtp_auth_failures_per_user=3)

    async with replicas(ingest_service.serve, [settings(1), settings(2)]) as (a, b):
        # connections per minute: 2 on a and 1 on b use the client's 3; b refuses the 4th, and so does a
        assert [(await greeting(port, "127.0.0.10"))[0] for port in (a, a, b)] == [220] * 3
        for port in (b, a):
            assert await greeting(port, "127.0.0.10") == (
                421, "4.7.0 Too many connections from 127.0.0.10 in the last minute")

        # open connections: one held on each replica; a third on either is refused
        held = [await Smtp.open(port, "127.0.0.11") for port in (a, b)]
        try:
            assert [(await c.reply())[0] for c in held] == [220, 220]
            assert await greeting(a, "127.0.0.11") == (421, "4.7.0 Too many connections from 127.0.0.11")
        finally:
            for c in held:
                await c.close()

        # AUTH failures per IP: 2 on a and 1 on b lock the client out on b (which saw only one of them),
        # even for another login's right password
        one, two, three = await make_account(), await make_account(), await make_account()
        on_a, on_b = await Smtp.open(a, "127.0.0.12"), await Smtp.open(b, "127.0.0.12")
        try:
            assert [(await c.reply())[0] for c in (on_a, on_b)] == [220, 220]
            assert [await on_a.login(one.smtp_username, "wrong") for _ in range(2)] == [535, 535]
            assert await on_b.login(two.smtp_username, "wrong") == 535
            assert await on_b.login(three.smtp_username, three.smtp_password) == 454
        finally:
            await on_a.close()
            await on_b.close()

        # AUTH failures per username, from several IPs and both replicas: the login is locked on both
        target = await make_account()
        for port, source in ((a, "127.0.0.13"), (b, "127.0.0.14"), (a, "127.0.0.15")):
            c = await Smtp.open(port, source)
            try:
                assert (await c.reply())[0] == 220
                assert await c.login(target.smtp_username, "wrong") == 535
            finally:
                await c.close()
        sources = (f"127.0.0.{i}" for i in range(20, 250))

        async def locked_on_b() -> bool:  # b learns of the lockout a made from a's announcement
            c = await Smtp.open(b, next(sources))
            try:
                assert (await c.reply())[0] == 220
                return await c.login(target.smtp_username, target.smtp_password) == 454
            finally:
                await c.close()

        await eventually(locked_on_b)
        c = await Smtp.open(a, "127.0.0.16")
        try:
            assert (await c.reply())[0] == 220
            assert await c.login(target.smtp_username, target.smtp_password) == 454
        finally:
            await c.close()
