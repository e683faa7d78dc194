"""The bounce receiver against a real NATS server, a real PostgreSQL and real SMTP clients (aiosmtplib):
real-MTA bounce mails from the corpus, rewritten to be about a message and recipient in the database."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import nats
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP
from nats.aio.client import Client

from postwire.bounce import receiver
from postwire.bounce.forwarding import RelayConfig, forward_bounce
from postwire.bounce.receiver import BounceListener
from postwire.bounce.service import serve
from postwire.bounce.settings import BounceSettings
from postwire.core import verp
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Message, Recipient
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.testing.smtp import SmtpSink
from postwire.v1 import envelope_pb2

CORPUS = Path(__file__).parents[3].parent / "shared" / "corpus" / "bounces"
SECRET = "bounce-receiver-tests-secret-0123456789"
DOMAIN = "bounces.postwire.test"


@dataclass
class Events:
    items: list[envelope_pb2.Event] = field(default_factory=list)

    def of(self, event_type: str) -> list[envelope_pb2.Event]:
        return [e for e in self.items if e.type == event_type]


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    await Topology().apply(client.jetstream())
    yield client
    await client.close()


@pytest_asyncio.fixture
async def events(nc: Client) -> AsyncIterator[Events]:
    log = Events()

    async def on_event(msg: Any) -> None:
        log.items.append(envelope_pb2.Event.FromString(msg.data))

    sub = await nc.jetstream().subscribe("events.>", ordered_consumer=True, cb=on_event)
    yield log
    await sub.unsubscribe()


Start = Callable[..., Awaitable[BounceListener]]


@pytest_asyncio.fixture
async def start_receiver(nats_server: NatsServer, pg_url: str, nc: Client) -> AsyncIterator[Start]:
    """``serve()`` in-process in the receiver role, on port 0; stopped at teardown."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> BounceListener:
        values: dict[str, Any] = dict(nats_url=nats_server.url, database_url=pg_url, bounce_role="receiver",
                                      bounce_smtp_port=0, verp_secret=SECRET, bounce_domain=DOMAIN,
                                      shutdown_grace_s=2)
        values.update(overrides)
        bound: asyncio.Future[BounceListener] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(BounceSettings(**values), stop, receiver_started=bound.set_result))
        stops.append((stop, task))
        return await asyncio.wait_for(bound, 30)

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass(frozen=True)
class Sent:
    account_id: str
    message_id: str
    recipient: str
    return_path: str


@pytest_asyncio.fixture
async def sent(pg_url: str) -> Sent:
    """A message with two recipients in PostgreSQL, as the recorder stores it from ``accepted`` events."""
    account, mid = new_id("a"), new_message_id()
    rcpt = f"Kijitora.{mid[-6:]}@example.co.jp"
    engine = make_engine(pg_url)
    now = datetime.now(UTC)
    async with make_sessionmaker(engine).begin() as s:
        s.add(Message(id=mid, account_id=account, mail_from="app@customer.test", subject="Hi", size=10,
                      source="api", tags=["welcome"], metadata_={"user": "42"}, created_at=now))
        for address in (rcpt, f"other.{mid[-6:]}@example.co.jp"):
            s.add(Recipient(message_id=mid, address=address, account_id=account, status="delivered",
                            attempts=1, updated_at=now))
    await engine.dispose()
    return Sent(account, mid, rcpt, verp.encode(mid, rcpt, SECRET.encode(), DOMAIN))


def corpus(name: str, replace: dict[str, str] | None = None) -> bytes:
    raw = (CORPUS / "eml" / name).read_bytes()
    for old, new in (replace or {}).items():
        raw = raw.replace(old.encode(), new.encode())
    return raw


async def send(listener: BounceListener, rcpt: str, raw: bytes, mail_from: str = "") -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, timeout=30) as smtp:
        await smtp.sendmail(mail_from, [rcpt], raw)


async def test_postfix_dsn_becomes_a_bounced_event(start_receiver: Start, sent: Sent, events: Events) -> None:
    listener = await start_receiver()
    raw = corpus("lhost-postfix-04.eml", {"kijitora@example.co.jp": sent.recipient})
    await send(listener, sent.return_path, raw)  # answered 250 only after the PubAck

    [ev] = await eventually(lambda: events.of("bounced"))
    assert (ev.account_id, ev.message_id, ev.recipient) == (sent.account_id, sent.message_id, sent.recipient)
    assert (ev.reason, ev.hardbounce, ev.enhanced_status, ev.smtp_code) == ("userunknown", True, "5.1.1", 550)
    assert ev.response and list(ev.tags) == ["welcome"] and dict(ev.metadata) == {"user": "42"}
    assert ev.event_id.startswith(f"{sent.message_id}.bounced.d")

    await send(listener, sent.return_path, raw)  # the same DSN again: the same event id, stored once
    await asyncio.sleep(0.5)
    assert len(events.of("bounced")) == 1


async def test_arf_report_becomes_complained(start_receiver: Start, sent: Sent, events: Events) -> None:
    listener = await start_receiver()
    await send(listener, sent.return_path, corpus("arf-01.eml"))
    [ev] = await eventually(lambda: events.of("complained"))
    assert (ev.recipient, ev.reason, ev.feedback_type, ev.hardbounce) == (sent.recipient, "feedback", "abuse",
                                                                           False)


async def test_replies_and_autoreplies_are_accepted_and_dropped(start_receiver: Start, sent: Sent,
                                                                events: Events) -> None:
    listener = await start_receiver()
    human = (b"From: Someone <someone@example.co.jp>\r\nTo: " + sent.return_path.encode() +
             b"\r\nSubject: Re: Hi\r\nMessage-ID: <r1@example.co.jp>\r\n\r\nThanks, see you tomorrow!\r\n")
    await send(listener, sent.return_path, human, mail_from="someone@example.co.jp")
    await send(listener, sent.return_path, corpus("rfc3834-01.eml"))
    await asyncio.sleep(0.5)
    assert events.items == []


async def test_rcpt_refuses_everything_but_valid_return_paths(start_receiver: Start, sent: Sent) -> None:
    listener = await start_receiver()
    forged = sent.return_path.replace(sent.message_id, new_message_id())
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port) as smtp:
        await smtp.mail("")
        code, text = await _rcpt(smtp, forged)
        assert code == 550 and "5.7.1" in text and "invalid return path" in text
        code, text = await _rcpt(smtp, f"postmaster@{DOMAIN}")
        assert code == 550 and text.startswith("5.1.1")
        code, text = await _rcpt(smtp, "someone@elsewhere.test")  # no relaying
        assert code == 550 and text.startswith("5.1.1")
        unknown = verp.encode(sent.message_id, "nobody@example.co.jp", SECRET.encode(), DOMAIN)
        code, _ = await _rcpt(smtp, unknown)  # a valid tag, but no such recipient recorded (yet): retry
        assert code == 451
        code, _ = await _rcpt(smtp, sent.return_path)
        assert code == 250
        assert not smtp.supports_extension("auth")


async def _rcpt(smtp: aiosmtplib.SMTP, address: str) -> tuple[int, str]:
    response = await smtp.execute_command(b"RCPT", f"TO:<{address}>".encode())
    return response.code, response.message


async def test_nats_down_gives_451_at_data(start_receiver: Start, sent: Sent,
                                           nats_server: NatsServer) -> None:
    listener = await start_receiver()
    raw = corpus("lhost-postfix-04.eml", {"kijitora@example.co.jp": sent.recipient})
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port) as smtp:
        await smtp.mail("")
        assert (await _rcpt(smtp, sent.return_path))[0] == 250
        await nats_server.stop()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.data(raw)
        assert refused.value.code == 451
    await nats_server.start()


async def test_size_limit(start_receiver: Start, sent: Sent) -> None:
    listener = await start_receiver(bounce_max_message_size=1024)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send(listener, sent.return_path, b"Subject: x\r\n\r\n" + b"x" * 4096 + b"\r\n")
    assert refused.value.code == 552


async def test_forwarding_sends_summary_and_report(start_receiver: Start, sent: Sent, events: Events,
                                                   smtp_sink: SmtpSink) -> None:
    listener = await start_receiver(bounce_forward={sent.account_id: "bounces@customer.test"},
                                    forward_smtp_port=smtp_sink.port)
    raw = corpus("lhost-postfix-04.eml", {"kijitora@example.co.jp": sent.recipient})
    await send(listener, sent.return_path, raw)
    [got] = await smtp_sink.handler.wait_for(1)
    assert got.mail_from in ("", "<>") and got.rcpt_tos == ["bounces@customer.test"]
    msg = got.message()
    assert "userunknown" in msg["Subject"] and msg["Auto-Submitted"] == "auto-generated"
    parts = list(msg.iter_attachments())
    assert [p.get_content_type() for p in parts] == ["message/rfc822"]
    assert sent.recipient in got.data.decode("utf-8", "replace")


async def test_forward_bounce_direct(smtp_sink: SmtpSink) -> None:
    ev = envelope_pb2.Event(event_id="m.bounced.d1.x@y", type="bounced", account_id="a", message_id="m",
                            recipient="x@y.test", reason="mailboxfull", enhanced_status="4.2.2")
    await forward_bounce(ev, b"From: MAILER-DAEMON@y.test\r\nSubject: failure\r\n\r\nfull\r\n", "to@c.test",
                         RelayConfig("127.0.0.1", smtp_sink.port, "postmaster@bounces.test"))
    [got] = await smtp_sink.handler.wait_for(1)
    assert "Reason:          mailboxfull (soft bounce)" in got.message().get_body(("plain",)).get_content()


def test_every_handle_method_is_an_aiosmtpd_hook() -> None:
    """aiosmtpd finds hooks by name: a misspelt one would silently never be called."""
    known = {"handle_" + m for m in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY",
                                     "AUTH", "PROXY", "STARTTLS", "exception")}
    mine = {n for n, _ in inspect.getmembers(receiver.BounceHandler) if n.startswith("handle_")}
    assert mine == set(receiver.HOOKS) and mine <= known
    source = inspect.getsource(SMTP).replace("'", '"')  # hooks are called as _call_handler_hook("<NAME>")
    for hook in mine - {"handle_exception"}:
        assert f'_call_handler_hook("{hook.removeprefix("handle_")}"' in source, hook
    assert "self.event_handler.handle_exception" in source


def test_id_age() -> None:
    mid = new_message_id()
    age = receiver.id_age_s(mid, int(datetime.now(UTC).timestamp() * 1000))
    assert age is not None and 0 <= age < 5
    assert receiver.id_age_s("short", 0) is None


async def test_readyz_reports_the_receiver_and_shutdown_closes_it(nats_server: NatsServer,
                                                                  pg_url: str) -> None:
    ops: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    bound: asyncio.Future[BounceListener] = asyncio.get_running_loop().create_future()
    settings = BounceSettings(nats_url=nats_server.url, database_url=pg_url, bounce_role="receiver",
                              bounce_smtp_port=0, verp_secret=SECRET, bounce_domain=DOMAIN,
                              shutdown_grace_s=1)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, started=ops.set_result,
                                     receiver_started=bound.set_result))
    port, listener = await asyncio.wait_for(ops, 30), await asyncio.wait_for(bound, 30)
    async with httpx.AsyncClient() as http:
        ready = await eventually(lambda: _ready(http, port))
    assert ready and listener.listening
    stop.set()
    await asyncio.wait_for(task, 30)
    assert not listener.listening
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", listener.port)


async def _ready(http: httpx.AsyncClient, port: int) -> bool:
    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
