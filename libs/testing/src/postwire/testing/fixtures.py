"""pytest plugin (loaded from the root config): real NATS, PostgreSQL, DNS and SMTP on loopback, and a
headless browser confined to loopback (postwire.testing.browser)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import weakref
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.testing.dns import DnsServer
from postwire.testing.nats import NatsServer
from postwire.testing.postgres import create_database, start_postgres
from postwire.testing.smtp import SmtpSink

# the browser fixtures (browser, browser_context, page, blocked_requests) live in their own module
pytest_plugins = ["postwire.testing.browser"]


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite leaves no process behind: one still running from this session's temporary folders at
    the end (a PostgreSQL, a nats-server, a local run's service) is a fixture that did not clean up. It
    is stopped, and named in an error, so the run fails."""
    yield
    base = f"{tmp_path_factory.getbasetemp()}/"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(base in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
    _, alive = psutil.wait_procs(found, timeout=10)  # ones already on their way out are not left behind
    left = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            left.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    assert not left, "processes left behind by the tests: " + "; ".join(left)


# NATS clients a test left open, with the test that left each: one a test never closed keeps reconnecting
# forever (services connect with unlimited reconnects) once its server is gone, and at the end of the
# session the loop waits for it until the suite's timeout
_session_loop: asyncio.AbstractEventLoop | None = None
_open_clients: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


def _nats_clients(loop: asyncio.AbstractEventLoop) -> set[Client]:
    """The NATS clients with a live task on ``loop`` (reading, or trying to reconnect)."""
    found = set()
    for task in asyncio.all_tasks(loop):
        frame = getattr(task.get_coro(), "cr_frame", None)
        client = frame.f_locals.get("self") if frame is not None else None
        if isinstance(client, Client) and not client.is_closed:
            found.add(client)
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    if _session_loop is not None and not _session_loop.is_closed():
        for client in _nats_clients(_session_loop):
            _open_clients.setdefault(client, item.nodeid)


@pytest_asyncio.fixture(scope="session", autouse=True)
async def no_nats_client_left_open() -> AsyncIterator[None]:
    """Every NATS client a test opens is closed by it. One left open at the end is closed here and named
    with the test after which it was still open, so the run fails instead of hanging."""
    global _session_loop
    _session_loop = asyncio.get_running_loop()
    yield
    left = [(client, _open_clients.get(client, "?")) for client in _nats_clients(_session_loop)]
    for client, _ in left:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
    assert not left, "NATS clients left open: " + "; ".join(
        sorted(f"{client.options.get('name') or 'unnamed'} after {test}" for client, test in left))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    # a short path: PostgreSQL's Unix socket path must fit in 107 bytes
    with tempfile.TemporaryDirectory(prefix="pwpg") as d:
        server = start_postgres(Path(d) / "pgdata")
        yield server
        server.cleanup()


@pytest.fixture(scope="session")
def pg_url(pg_server: Any) -> str:
    """A database with the whole Alembic history applied, shared by the session (isolate by account)."""
    from postwire.db.migrate import upgrade

    url = create_database(pg_server)
    upgrade(url)
    return url


@pytest_asyncio.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    srv = NatsServer(tmp_path / "jetstream")
    await srv.start()
    yield srv
    await srv.stop()


@pytest_asyncio.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on the test's NATS server with the whole topology declared."""
    nc = await nats.connect(nats_server.url)
    await Topology().apply(nc.jetstream())
    yield nc.jetstream()
    await nc.close()


@pytest_asyncio.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on the shared test database (its engine disposed after the test)."""
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    srv = DnsServer().start()
    yield srv
    srv.stop()


@pytest_asyncio.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    sink = await SmtpSink().start()
    yield sink
    await sink.stop()


async def eventually(check: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns a truthy value; fail the test at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(interval)
