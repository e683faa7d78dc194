"""One-click unsubscribe and Feedback-ID end to end: the dispatcher in-process delivering to the loopback
SMTP sink, DKIM checked by dkimpy against the key in the loopback DNS server, and the unsubscribe link of
a delivered copy followed through the real api-gateway, after which the next bulk message to the address
is suppressed and a transactional one is still delivered."""
# uses postwire.api_gateway: the link a recipient got is followed through the real /u/ endpoint

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest_asyncio
from sqlalchemy import select

from postwire.api_gateway.service import serve as serve_gateway
from postwire.api_gateway.settings import ApiSettings
from postwire.core import tracking, unsubscribe
from postwire.core.lanes import BULK, TRANSACTIONAL
from postwire.core.settings import verp_secret_bytes
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Suppression
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.testing.smtp import Received, SmtpSink

from .conftest import VERP_SECRET
from .test_dkim import Register, register, signature_tags, verifies  # noqa: F401  (register: a fixture)

BASE = "https://t.example.test"
_LINK = re.compile(r"<(https://t\.example\.test/u/([A-Za-z0-9_-]+))>")


def _message(from_addr: str, to: str, extra: str = "") -> bytes:
    return (f"From: News <{from_addr}>\r\nTo: {to}\r\nSubject: Spring\r\n"
            "Date: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <spring@example.test>\r\n"
            f"{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n").encode()


Gateway = Callable[[], Awaitable[httpx.AsyncClient]]


@pytest_asyncio.fixture
async def gateway(nats_server: NatsServer, pg_url: str) -> AsyncIterator[Gateway]:
    """The api-gateway in-process with the dispatcher's secret (so its tokens are ours)."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None], httpx.AsyncClient]] = []

    async def start() -> httpx.AsyncClient:
        settings = ApiSettings(nats_url=nats_server.url, database_url=pg_url, http_port=0,
                               message_id_domain="api.postwire.test", verp_secret=VERP_SECRET)
        stop = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_gateway(settings, stop, started=port.set_result))
        await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.result()}", timeout=30)
        stops.append((stop, task, http))
        return http

    yield start
    for stop, task, http in stops:
        await http.aclose()
        stop.set()
        await task


def _header(received: Received, name: str) -> list[str]:
    return [str(v) for v in received.message().get_all(name) or []]


async def test_bulk_mail_gets_a_signed_one_click_link_that_suppresses_bulk_but_not_transactional(
        register: Register, start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer,  # noqa: F811
        smtp_sink: SmtpSink, domain: str, gateway: Gateway, pg_url: str) -> None:
    sending = f"news-{domain}"
    account_id, _ = await register(sending)
    dns_server.add_mail_domain(domain)
    rcpt = f"Reader@{domain}"
    dispatcher = await start_dispatcher(tracking_base_url=BASE)
    http = await gateway()
    mid = await submit([rcpt], _message(f"news@{sending}", rcpt,
                                        "List-Unsubscribe: <mailto:leave@example.test?subject=out>, "
                                        "<https://example.test/theirs>\r\n"),
                       account_id=account_id, mail_from=f"news@{sending}", stream=BULK)

    [bulk] = await smtp_sink.handler.wait_for(1)
    assert await verifies(bulk, dns_server)
    signed = signature_tags(bulk)["h"].lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "feedback-id"} <= set(signed)
    [value] = _header(bulk, "List-Unsubscribe")  # one field: ours first, the customer's mailto kept
    link, token = _LINK.match(value).groups()  # type: ignore[union-attr]
    assert value == f"<{link}>, <mailto:leave@example.test?subject=out>"
    assert _header(bulk, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert _header(bulk, "Feedback-ID") == [f"t1:{account_id}:bulk:postwire"]
    key = unsubscribe.token_key(tracking.tracking_key(verp_secret_bytes(dispatcher.settings)))
    assert unsubscribe.read_token(key, token) == unsubscribe.Unsubscribe(account_id, mid, rcpt)

    page = await http.get(f"/u/{token}")
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    done = await http.post(f"/u/{token}", content=unsubscribe.ONE_CLICK,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "Unsubscribed" in done.text
    [ev] = await eventually(lambda: events.of("unsubscribed"))
    assert (ev.account_id, ev.message_id, ev.recipient, ev.list_id) == (account_id, mid, rcpt, "")
    engine = make_engine(pg_url)
    async with make_sessionmaker(engine)() as s:
        row = (await s.scalars(select(Suppression).where(Suppression.account_id == account_id))).one()
    await engine.dispose()
    assert (row.address, row.reason, row.source, row.scope) == (rcpt.lower(), "unsubscribe", "unsubscribe",
                                                                 "bulk")

    await submit([rcpt], _message(f"news@{sending}", rcpt), account_id=account_id,
                 mail_from=f"news@{sending}", stream=BULK)
    receipt = await submit([rcpt], _message(f"news@{sending}", rcpt), account_id=account_id,
                           mail_from=f"news@{sending}", stream=TRANSACTIONAL)
    [suppressed] = await eventually(lambda: events.of("suppressed"))
    assert suppressed.reason == "unsubscribe"
    delivered = await eventually(lambda: [e for e in events.of("delivered") if e.message_id == receipt])
    assert len(delivered) == 1
    received = await smtp_sink.handler.wait_for(2)
    assert len(received) == 2  # the bulk one was not sent
    transactional = received[1]
    assert await verifies(transactional, dns_server)
    assert not _header(transactional, "List-Unsubscribe")
    assert not _header(transactional, "List-Unsubscribe-Post")
    assert _header(transactional, "Feedback-ID") == [f"t1:{account_id}:transactional:postwire"]
    assert "feedback-id" in signature_tags(transactional)["h"].lower().split(":")


async def test_a_send_can_ask_for_the_link_and_name_its_list(
        register: Register, start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer,  # noqa: F811
        smtp_sink: SmtpSink, domain: str, gateway: Gateway) -> None:
    """A transactional message that asks gets the link too; the List-Id header names the list, so the
    unsubscribe stops that list's bulk mail only."""
    sending = f"list-{domain}"
    account_id, _ = await register(sending)
    dns_server.add_mail_domain(domain)
    rcpt = f"member@{domain}"
    await start_dispatcher(tracking_base_url=BASE)
    http = await gateway()
    await submit([rcpt], _message(f"news@{sending}", rcpt, "List-Id: Weekly <weekly.example.test>\r\n"),
                 account_id=account_id, mail_from=f"news@{sending}", stream=TRANSACTIONAL, unsubscribe=True)
    [copy] = await smtp_sink.handler.wait_for(1)
    assert await verifies(copy, dns_server)
    [value] = _header(copy, "List-Unsubscribe")
    _, token = _LINK.match(value).groups()  # type: ignore[union-attr]
    assert (await http.post(f"/u/{token}")).status_code == 200  # the page's button: an empty POST works too
    [ev] = await eventually(lambda: events.of("unsubscribed"))
    assert ev.list_id == "weekly.example.test"

    other = await submit([rcpt], _message(f"news@{sending}", rcpt, "List-Id: <monthly.example.test>\r\n"),
                         account_id=account_id, mail_from=f"news@{sending}", stream=BULK)
    await submit([rcpt], _message(f"news@{sending}", rcpt, "List-Id: <weekly.example.test>\r\n"),
                 account_id=account_id, mail_from=f"news@{sending}", stream=BULK)
    [suppressed] = await eventually(lambda: events.of("suppressed"))
    assert suppressed.reason == "unsubscribe"
    assert await eventually(lambda: [e for e in events.of("delivered") if e.message_id == other])
    assert len(smtp_sink.handler.received) == 2  # the first and the other list's; not the weekly one
