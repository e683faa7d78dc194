"""One running system (`postwire run`) per module, delivering to a loopback SMTP sink via loopback DNS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest_asyncio

from postwire.testing.dns import DnsServer
from postwire.testing.smtp import SmtpSink
from postwire.testing.stack import LocalStack

DEST_DOMAIN = "dest.test"


@pytest_asyncio.fixture(scope="module")
async def sink() -> AsyncIterator[SmtpSink]:
    srv = await SmtpSink().start()
    yield srv
    await srv.stop()


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory, dns_server: DnsServer, sink: SmtpSink) -> AsyncIterator[LocalStack]:
    dns_server.add_mail_domain(DEST_DOMAIN)
    data_dir: Path = tmp_path_factory.mktemp("stack")
    stack = LocalStack(data_dir, dns_server.nameserver, sink.port,
                       extra_env={"POSTWIRE_RETRY_BASE_S": "0.5", "POSTWIRE_RETRY_MAX_S": "2",
                                  # the tests' webhook receiver listens on plain http on loopback
                                  "POSTWIRE_WEBHOOK_ALLOW_HTTP": "true",
                                  "POSTWIRE_WEBHOOK_ALLOW_PRIVATE": "true",
                                  "POSTWIRE_WEBHOOK_RECONCILE_S": "0.5",
                                  "POSTWIRE_BOUNCE_DOMAIN": "bounces.e2e.test"})
    await stack.start()
    yield stack
    code = await stack.stop()
    assert code == 0, f"postwire run exited with {code}"
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(data_dir) in part for part in (p.info["cmdline"] or []))]
    assert leftovers == [], f"processes left behind: {leftovers}"
