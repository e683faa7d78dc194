"""The bounce receiver against a real NATS server, a real PostgreSQL and real SMTP clients (aiosmtplib):
bounce mails written for these tests (postwire.testing's bounce_mails/) and, when the shared corpus is
there, real-MTA ones, each rewritten to be about a message and recipient in the database."""

from __future__ import annotations

# uses postwire.recorder: bounce forwarding is fed by the receiver and the recorder; both run here
import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.message import Message as MimeMessage
from typing import Any

import aiosmtplib
import httpx
import nats
import pytest
import pytest_asyncio
from aiosmtpd.smtp import SMTP
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_forwarding.forwarder import SOURCE
from postwire.bounce_receiver import receiver
from postwire.bounce_receiver.receiver import BounceListener
from postwire.bounce_receiver.service import serve
from postwire.bounce_receiver.settings import ReceiverSettings
from postwire.core import verp
from postwire.core.events import make_event, publish_event
from postwire.core.ids import new_id, new_message_id
from postwire.core.topology import Topology
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Message, Recipient
from postwire.recorder.service import serve as serve_recorder
from postwire.recorder.settings import RecorderSettings
from postwire.testing.corpus import BOUNCE_MAILS, corpus_path
from postwire.testing.fixtures import eventually
from postwire.testing.inbound import InboundWatch
from postwire.testing.nats import NatsServer
from postwire.v1 import envelope_pb2

FIXTURES = BOUNCE_MAILS
SECRET = "bounce-receiver-tests-secret-0123456789"
DOMAIN = "bounces.postwire.test"


@dataclass
class Events:
    items: list[envelope_pb2.Event] = field(default_factory=list)
    sentinels: set[str] = field(default_factory=set)  # ids of the sentinels that arrived (not in items)

    def of(self, event_type: str) -> list[envelope_pb2.Event]:
        return [e for e in self.items if e.type == event_type]

    async def settle(self, js: JetStreamContext) -> None:
        """Return once every event stored in EVENTS before this call has arrived: a sentinel published
        now comes after them (one ordered consumer, stream order), so waiting for it waits for them."""
        ev = make_event("opened", account_id=SENTINEL_ACCOUNT, message_id=new_message_id(),
                        recipient="sentinel@example.test")
        await publish_event(js, ev)
        await eventually(lambda: ev.event_id in self.sentinels)


SENTINEL_ACCOUNT = "sentinel"


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
        ev = envelope_pb2.Event.FromString(msg.data)
        if ev.account_id == SENTINEL_ACCOUNT:
            log.sentinels.add(ev.event_id)
        else:
            log.items.append(ev)

    sub = await nc.jetstream().subscribe("events.>", ordered_consumer=True, cb=on_event)
    yield log
    await sub.unsubscribe()


Start = Callable[..., Awaitable[BounceListener]]


@pytest_asyncio.fixture
async def start_receiver(nats_server: NatsServer, pg_url: str, nc: Client) -> AsyncIterator[Start]:
    """``serve()`` in-process in the receiver role, on port 0; stopped at teardown."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> BounceListener:
        values: dict[str, Any] = dict(nats_url=nats_server.url, database_url=pg_url, bounce_smtp_port=0,
                                      verp_secret=SECRET, bounce_domain=DOMAIN,
                                      shutdown_grace_s=2)
        values.update(overrides)
        bound: asyncio.Future[BounceListener] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        task = asyncio.create_task(serve(ReceiverSettings(**values), stop, receiver_started=bound.set_result))
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


@dataclass(frozen=True)
class Mail:
    """A mail to send to the receiver: one of fixtures/ (always there) or, with ``corpus``, a real one from
    the shared corpus (the test skips, saying why, when the corpus is absent)."""

    name: str
    recipient: str = ""  # the bounced address in the file: readdressed to the test's recipient
    corpus: bool = False

    def read(self, recipient: str = "") -> bytes:
        path = corpus_path("bounces", "eml", self.name) if self.corpus else FIXTURES / self.name
        raw = path.read_bytes()
        return raw.replace(self.recipient.encode(), recipient.encode()) if self.recipient else raw


POSTFIX_USER_UNKNOWN = Mail("postfix-userunknown.eml", "jane.roe@example.org")
CORPUS_POSTFIX_USER_UNKNOWN = Mail("lhost-postfix-04.eml", "kijitora@example.co.jp", corpus=True)


async def send(listener: BounceListener, rcpt: str, raw: bytes, mail_from: str = "") -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listener.port, timeout=30) as smtp:
        await smtp.sendmail(mail_from, [rcpt], raw)


@pytest.mark.parametrize(("mail", "expected"), [
    pytest.param(POSTFIX_USER_UNKNOWN, ("userunknown", True, "5.1.1", 550), id="postfix-userunknown"),
    pytest.param(Mail("postfix-mailboxfull.eml", "bob.full@example.net"),
                 ("mailboxfull", False, "5.2.2", 552), id="postfix-mailboxfull"),
    pytest.param(Mail("exchange-userunknown.eml", "ken.doe@contoso.example"),
                 ("userunknown", True, "5.1.10", 550), id="exchange-userunknown"),
    pytest.param(CORPUS_POSTFIX_USER_UNKNOWN,
                 ("userunknown", True, "5.1.1", 550), id="corpus-lhost-postfix-04"),
])
async def test_dsn_becomes_a_bounced_event(start_receiver: Start, sent: Sent, events: Events, mail: Mail,
                                           expected: tuple[str, bool, str, int], nc: Client) -> None:
    raw = mail.read(sent.recipient)
    listener = await start_receiver()
    await send(listener, sent.return_path, raw)  # answered 250 only after the PubAck

    [ev] = await eventually(lambda: events.of("bounced"))
    assert (ev.account_id, ev.message_id, ev.recipient) == (sent.account_id, sent.message_id, sent.recipient)
    assert (ev.reason, ev.hardbounce, ev.enhanced_status, ev.smtp_code) == expected
    assert ev.response and list(ev.tags) == ["welcome"] and dict(ev.metadata) == {"user": "42"}
    assert ev.event_id.startswith(f"{sent.message_id}.bounced.d")

    await send(listener, sent.return_path, raw)  # the same DSN again: the same event id, stored once
    await events.settle(nc.jetstream())
    assert len(events.of("bounced")) == 1


@pytest.mark.parametrize("mail", [pytest.param(Mail("arf-abuse.eml"), id="arf-abuse"),
                                  pytest.param(Mail("arf-01.eml", corpus=True), id="corpus-arf-01")])
async def test_arf_report_becomes_complained(start_receiver: Start, sent: Sent, events: Events,
                                             mail: Mail) -> None:
    raw = mail.read()
    listener = await start_receiver()
    await send(listener, sent.return_path, raw)
    [ev] = await eventually(lambda: events.of("complained"))
    assert (ev.recipient, ev.reason, ev.feedback_type, ev.hardbounce) == (sent.recipient, "feedback", "abuse",
                                                                           False)


@pytest.mark.parametrize("auto_reply", [
    pytest.param(Mail("auto-reply.eml"), id="auto-reply"),
    pytest.param(Mail("rfc3834-01.eml", corpus=True), id="corpus-rfc3834-01"),
])
async def test_replies_and_autoreplies_are_accepted_and_dropped(start_receiver: Start, sent: Sent,
                                                                events: Events, auto_reply: Mail,
                                                                nc: Client) -> None:
    raw = auto_reply.read()
    listener = await start_receiver()
    human = (b"From: Someone <someone@example.co.jp>\r\nTo: " + sent.return_path.encode() +
             b"\r\nSubject: Re: Hi\r\nMessage-ID: <r1@example.co.jp>\r\n\r\nThanks, see you tomorrow!\r\n")
    await send(listener, sent.return_path, human, mail_from="someone@example.co.jp")
    await send(listener, sent.return_path, raw)
    await events.settle(nc.jetstream())  # both were answered 250: any event of theirs is stored by now
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
    raw = POSTFIX_USER_UNKNOWN.read(sent.recipient)
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


@pytest.mark.parametrize(("mail", "explanation", "returned"), [
    pytest.param(POSTFIX_USER_UNKNOWN, "Recipient address rejected", b"X-Mailer: Shop order notifier 2.3",
                 id="postfix-userunknown"),
    pytest.param(CORPUS_POSTFIX_USER_UNKNOWN, "Address rejected", b"X-Mailer: Apple Mail",
                 id="corpus-lhost-postfix-04"),
])
async def test_forwarding_sends_an_rfc3464_report(start_receiver: Start, sent: Sent, events: Events,
                                                  inbound: InboundWatch, mail: Mail, explanation: str,
                                                  returned: bytes) -> None:
    """No accepted event with DSN parameters (the fixture writes the rows directly): the defaults, a
    failure is forwarded with the full returned message, as a message of the account submitted to
    INBOUND (the dispatcher delivers it like any mail)."""
    raw = mail.read(sent.recipient)
    listener = await start_receiver(bounce_forward={sent.account_id: "bounces@customer.test"})
    await send(listener, sent.return_path, raw)
    [got] = await inbound.wait_for(1, sent.account_id)
    assert got.mail_from == "" and got.rcpt_tos == ["bounces@customer.test"]
    [source] = [e.source for e in inbound.envelopes if e.account_id == sent.account_id]
    assert source == SOURCE
    msg = got.message()
    assert "userunknown" in msg["Subject"] and msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    per_message, per_rcpt = dsn_blocks(msg)
    assert per_message["Reporting-MTA"] == f"dns; {DOMAIN}" and "Original-Envelope-Id" not in per_message
    assert (per_rcpt["Final-Recipient"], per_rcpt["Action"], per_rcpt["Status"]) == (
        f"rfc822; {sent.recipient}", "failed", "5.1.1")
    assert "Original-Recipient" not in per_rcpt
    summary = msg.get_body(("plain",))
    assert summary is not None and sent.recipient in summary.get_content()
    assert explanation in summary.get_content()  # the remote MTA's own explanation, quoted
    assert returned in got.data  # the returned message, whole


def dsn_blocks(msg: EmailMessage) -> tuple[MimeMessage, MimeMessage]:
    """The per-message and (only) per-recipient field blocks of the report's message/delivery-status."""
    [status] = [p for p in msg.iter_parts() if p.get_content_type() == "message/delivery-status"]
    per_message, per_rcpt = status.get_payload()
    return per_message, per_rcpt


def dsn_mail(recipient: str, marker: str) -> bytes:
    """A minimal RFC 3464 bounce of a message whose body is ``marker``."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        "--BB\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--BB\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: app@customer.test\r\nTo: {recipient}\r\nSubject: Order 42\r\n"
        "Message-ID: <order-42@customer.test>\r\n\r\n"
        f"{marker}\r\n"
        "--BB--\r\n").encode()


@pytest_asyncio.fixture
async def inbound(nc: Client) -> AsyncIterator[InboundWatch]:
    async with InboundWatch(nc.jetstream()) as watch:
        yield watch


@dataclass
class Forwarding:
    """The receiver and the recorder forwarding one fresh account's reports into INBOUND (``sink``)."""

    listener: BounceListener
    js: JetStreamContext
    sessions: async_sessionmaker[AsyncSession]
    account_id: str
    sink: InboundWatch

    async def accept(self, recipient: str, *, ret: str = "", envid: str = "", notify: tuple[str, ...] = (),
                     orcpt: str = "", message_id: str = "", mail_from: str = "app@customer.test") -> str:
        """Publish the router's ``accepted`` event (with the RFC 3461 parameters) and wait until the
        recorder stored it; returns the message id."""
        mid = message_id or new_message_id()
        ev = make_event("accepted", account_id=self.account_id, message_id=mid, recipient=recipient,
                        mail_from=mail_from, subject="Order 42", size=100, source="smtp")
        if ret or envid:
            ev.dsn.CopyFrom(envelope_pb2.Dsn(ret=ret, envid=envid))
        if notify or orcpt:
            ev.recipient_dsn.CopyFrom(envelope_pb2.RecipientDsn(notify=list(notify), orcpt=orcpt))
        await publish_event(self.js, ev)
        await eventually(lambda: self._stored(mid, recipient))
        return mid

    async def _stored(self, mid: str, recipient: str) -> bool:
        async with self.sessions() as s:
            return await s.get(Recipient, (mid, recipient)) is not None

    async def bounce(self, mid: str, recipient: str, marker: str) -> None:
        await send(self.listener, verp.encode(mid, recipient, SECRET.encode(), DOMAIN),
                   dsn_mail(recipient, marker))

    async def outcome(self, event_type: str, mid: str, recipient: str, attempt: int = 0,
                      **fields: Any) -> envelope_pb2.Event:
        ev = make_event(event_type, account_id=self.account_id, message_id=mid, recipient=recipient,
                        attempt=attempt, **fields)
        await publish_event(self.js, ev)
        return ev

    def forwarded_for(self, recipient: str) -> list[EmailMessage]:
        return [r.message() for r in self.sink.of_account(self.account_id)
                if f"rfc822; {recipient}" in r.data.decode("utf-8", "replace")]


@pytest_asyncio.fixture
async def forwarding(start_receiver: Start, nc: Client, sessions: async_sessionmaker[AsyncSession],
                     inbound: InboundWatch, nats_server: NatsServer,
                     pg_url: str) -> AsyncIterator[Forwarding]:
    """The receiver and the event recorder, both forwarding one account's reports: the two stages that
    feed bounce forwarding (so this test starts the recorder service too)."""
    account = new_id("a")
    forward: dict[str, Any] = dict(bounce_forward={account: "dsn@customer.test"}, verp_secret=SECRET,
                                   bounce_domain=DOMAIN, shutdown_grace_s=2)
    listener = await start_receiver(**forward)
    stop = asyncio.Event()
    recorder = asyncio.create_task(serve_recorder(RecorderSettings(
        nats_url=nats_server.url, database_url=pg_url, recorder_retry_s=0.1, **forward), stop))
    yield Forwarding(listener, nc.jetstream(), sessions, account, inbound)
    stop.set()
    await asyncio.wait_for(recorder, 30)


async def test_forwarding_honours_notify_never(forwarding: Forwarding) -> None:
    never, control = "never@example.org", "control@example.org"
    mid_never = await forwarding.accept(never, notify=("NEVER",))
    mid_control = await forwarding.accept(control)
    skipped = _skipped()
    await forwarding.bounce(mid_never, never, "body of the never message")
    await eventually(lambda: _skipped() > skipped)  # the NEVER one was decided: skipped
    await forwarding.bounce(mid_control, control, "body of the control message")
    [got] = await forwarding.sink.wait_for(1, forwarding.account_id)
    assert len(forwarding.sink.of_account(forwarding.account_id)) == 1
    assert f"rfc822; {control}" in got.data.decode() and never not in got.data.decode()


async def test_forwarding_adds_envelope_id_and_original_recipient(forwarding: Forwarding) -> None:
    rcpt = "jane@example.org"
    mid = await forwarding.accept(rcpt, ret="FULL", envid="order-42/env", notify=("FAILURE", "DELAY"),
                                  orcpt="rfc822;Jane.Doe@Example.org")
    await forwarding.bounce(mid, rcpt, "FULL-BODY-MARKER")
    [got] = await forwarding.sink.wait_for(1, forwarding.account_id)
    msg = got.message()
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    per_message, per_rcpt = dsn_blocks(msg)
    assert per_message["Original-Envelope-Id"] == "order-42/env"
    assert per_message["Arrival-Date"]  # when Postwire accepted the message
    assert per_rcpt["Original-Recipient"] == "rfc822;Jane.Doe@Example.org"
    assert (per_rcpt["Final-Recipient"], per_rcpt["Action"], per_rcpt["Status"]) == (
        f"rfc822; {rcpt}", "failed", "5.1.1")
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 user unknown"
    assert b"FULL-BODY-MARKER" in got.data  # RET=FULL: the returned message, whole


async def test_forwarding_ret_hdrs_returns_only_the_headers(forwarding: Forwarding) -> None:
    rcpt = "hdrs@example.org"
    mid = await forwarding.accept(rcpt, ret="HDRS")
    await forwarding.bounce(mid, rcpt, "SECRET-BODY-MARKER")
    [got] = await forwarding.sink.wait_for(1, forwarding.account_id)
    msg = got.message()
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    headers = list(msg.iter_parts())[2].get_content()
    assert "Subject: Order 42" in headers and "Message-ID: <order-42@customer.test>" in headers
    assert b"SECRET-BODY-MARKER" not in got.data


async def test_recorder_forwards_synchronous_failures_and_requested_notices(forwarding: Forwarding) -> None:
    """failed / delivered / deferred events Postwire produced itself: forwarded from the recorder, once,
    when NOTIFY asks for them."""
    failed, never, success, failure_only, delay = (f"{n}@example.org" for n in (
        "failed", "never", "success", "failureonly", "delay"))
    skipped = _skipped()
    mid_failed = await forwarding.accept(failed, envid="env-failed")
    mid_never = await forwarding.accept(never, notify=("NEVER",))
    mid_success = await forwarding.accept(success, notify=("SUCCESS",))
    mid_failure_only = await forwarding.accept(failure_only, notify=("FAILURE",))
    mid_delay = await forwarding.accept(delay, notify=("DELAY", "FAILURE"))
    rejected = dict(smtp_code=550, enhanced_status="5.1.1", mx_host="mx.example.org", reason="userunknown",
                    hardbounce=True, response="5.1.1 <failed@example.org>: user unknown")
    first = await forwarding.outcome("failed", mid_failed, failed, **rejected)
    await forwarding.outcome("failed", mid_never, never, **rejected)
    await forwarding.outcome("delivered", mid_success, success, smtp_code=250, enhanced_status="2.0.0",
                             response="2.0.0 Ok: queued", mx_host="mx.example.org")
    await forwarding.outcome("delivered", mid_failure_only, failure_only, smtp_code=250)
    for attempt in (0, 1):
        await forwarding.outcome("deferred", mid_delay, delay, attempt=attempt, smtp_code=451,
                                 enhanced_status="4.7.1", response="4.7.1 try again later",
                                 reason="blocked")
    # the same failed event again, past JetStream's duplicate window: stored once, forwarded once
    await forwarding.js.publish(f"events.{forwarding.account_id}.failed", first.SerializeToString(),
                                headers={"Nats-Msg-Id": "again"})
    await forwarding.sink.wait_for(3, forwarding.account_id)
    control = "control@example.org"
    await forwarding.outcome("failed", await forwarding.accept(control), control, smtp_code=550)
    await forwarding.sink.wait_for(4, forwarding.account_id)
    await eventually(lambda: _skipped() >= skipped + 3)  # NEVER, FAILURE only, the second deferral
    assert len(forwarding.sink.of_account(forwarding.account_id)) == 4

    [msg] = forwarding.forwarded_for(failed)
    per_message, per_rcpt = dsn_blocks(msg)
    assert per_message["Original-Envelope-Id"] == "env-failed"
    assert (per_rcpt["Action"], per_rcpt["Status"], per_rcpt["Remote-MTA"]) == (
        "failed", "5.1.1", "dns; mx.example.org")
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <failed@example.org>: user unknown"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "message/delivery-status"]
    [msg] = forwarding.forwarded_for(success)
    assert (dsn_blocks(msg)[1]["Action"], dsn_blocks(msg)[1]["Status"]) == ("relayed", "2.0.0")
    [msg] = forwarding.forwarded_for(delay)  # one delay notice, not one per retry
    assert (dsn_blocks(msg)[1]["Action"], dsn_blocks(msg)[1]["Status"]) == ("delayed", "4.7.1")
    assert not forwarding.forwarded_for(never) and not forwarding.forwarded_for(failure_only)
    assert len(forwarding.forwarded_for(control)) == 1


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
    settings = ReceiverSettings(nats_url=nats_server.url, database_url=pg_url, bounce_smtp_port=0,
                              verp_secret=SECRET, bounce_domain=DOMAIN,
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


def _skipped() -> float:
    return REGISTRY.get_sample_value("postwire_bounce_forwarded_total", {"outcome": "skipped"}) or 0.0


async def test_no_report_about_a_message_with_a_null_sender(forwarding: Forwarding) -> None:
    """A message sent with MAIL FROM:<> (a report itself, an auto-reply) never gets a report
    (RFC 3461 6.2): a forwarded report that fails cannot start a loop."""
    null, control = "null@example.org", "control@example.org"
    mid_null = await forwarding.accept(null, mail_from="")
    mid_control = await forwarding.accept(control)
    skipped = _skipped()
    await forwarding.outcome("failed", mid_null, null, smtp_code=550, enhanced_status="5.1.1")
    await eventually(lambda: _skipped() > skipped)  # the null sender's failure was decided: skipped
    await forwarding.outcome("failed", mid_control, control, smtp_code=550, enhanced_status="5.1.1")
    await forwarding.sink.wait_for(1, forwarding.account_id)
    assert not forwarding.forwarded_for(null) and len(forwarding.forwarded_for(control)) == 1
