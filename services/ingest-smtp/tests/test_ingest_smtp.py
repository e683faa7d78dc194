"""ingest-smtp end to end on loopback: real aiosmtpd server, nats-server, PostgreSQL; smtplib as the client.

smtplib is blocking, so each client conversation runs in a thread (asyncio.to_thread) while the server
runs on the test's loop.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from postwire.core.bodies import BodyStore
from postwire.core.topology import INBOUND
from postwire.db.accounts import (
    LoginDefaults,
    NewCredentials,
    SmtpLogin,
    set_smtp_login_defaults,
    set_smtp_login_stream,
)
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.ingest_smtp.auth import LoginVerifier, database_check
from postwire.testing.fixtures import eventually
from postwire.testing.nats import NatsServer
from postwire.testing.ports import free_port
from postwire.v1.envelope_pb2 import InboundMessage

StartIngest = Callable[..., Awaitable[Any]]  # conftest.start_ingest: (**settings) -> Ingest

# --- client helpers -------------------------------------------------------------------------------------

SENDER = "app@sender.example.com"


@dataclass
class Reply:
    code: int
    text: str


@dataclass
class Transaction:
    """What one client session saw: the replies to MAIL, each RCPT, and DATA (when it got that far)."""

    mail: Reply | None = None
    rcpts: list[Reply] = field(default_factory=list)
    data: Reply | None = None


def insecure_tls() -> ssl.SSLContext:
    """The self-signed dev certificate cannot be verified; a submission client told so skips verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(port: int, *, starttls: bool = False) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.com", timeout=60)
    client.ehlo()
    if starttls:
        client.starttls(context=insecure_tls())
        client.ehlo()
    return client


def login(client: smtplib.SMTP, creds: NewCredentials, mechanism: str = "PLAIN",
          initial_response: bool = True) -> None:
    client.user, client.password = creds.smtp_username, creds.smtp_password
    auth: Callable[..., str] = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    client.auth(mechanism, auth, initial_response_ok=initial_response)


def transact(client: smtplib.SMTP, data: bytes, rcpts: list[str], sender: str = SENDER,
             mail_options: tuple[str, ...] = ()) -> Transaction:
    """MAIL, RCPT..., DATA step by step, stopping at the first refusal (as a real client would)."""
    seen = Transaction()
    seen.mail = Reply(*_decode(client.mail(sender, list(mail_options))))
    if seen.mail.code != 250:
        return seen
    for rcpt in rcpts:
        seen.rcpts.append(Reply(*_decode(client.rcpt(rcpt))))
    if not any(r.code == 250 for r in seen.rcpts):
        client.rset()
        return seen
    seen.data = Reply(*_decode(client.data(data)))
    return seen


def send(port: int, creds: NewCredentials | None, data: bytes, rcpts: list[str], *, mechanism: str = "PLAIN",
         starttls: bool = False, mail_options: tuple[str, ...] = ()) -> Transaction:
    client = connect(port, starttls=starttls)
    try:
        if creds is not None:
            login(client, creds, mechanism)
        return transact(client, data, rcpts, mail_options=mail_options)
    finally:
        client.quit()


def plain_token(creds: NewCredentials) -> str:
    """The AUTH PLAIN initial response, for clients driven command by command."""
    return base64.b64encode(f"\0{creds.smtp_username}\0{creds.smtp_password}".encode()).decode()


def _decode(reply: tuple[int, bytes]) -> tuple[int, str]:
    return reply[0], reply[1].decode()


async def set_login_defaults(pg_url: str, username: str, **changes: bool) -> None:
    """What `postwire smtp-login set` does (cli/tests run the command itself)."""
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            assert await set_smtp_login_defaults(session, username, changes) is not None
    finally:
        await engine.dispose()


# --- reading INBOUND back, as the router would ----------------------------------------------------------


async def next_inbound(js: JetStreamContext) -> tuple[InboundMessage, bytes]:
    sub = await js.pull_subscribe("inbound.>", durable="test-reader", stream=INBOUND)
    try:
        [msg] = await sub.fetch(1, timeout=10)
        await msg.ack()
    finally:
        await sub.unsubscribe()
    envelope = InboundMessage.FromString(msg.data)
    return envelope, await BodyStore(js, 0).get(envelope.body)


async def inbound_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(INBOUND)).state.messages)


def message(subject: str = "Hello", body_lines: int = 3, line: bytes = b"x" * 70) -> bytes:
    """CRLF lines, one of them starting with a dot (proves dot-stuffing round-trips byte for byte)."""
    head = (f"From: App <{SENDER}>\r\nTo: someone@rcpt.example.com\r\nSubject: {subject}\r\n"
            "Message-ID: <t1@sender.example.com>\r\n\r\n").encode()
    return head + b".leading dot survives\r\n" + (line + b"\r\n") * body_lines


def split_received(body: bytes) -> tuple[str, bytes]:
    """(our Received header, the rest): the rest must be exactly what the client sent."""
    assert body.startswith(b"Received: ")
    end = body.index(b"\r\n")
    while body[end + 2:end + 3] in (b"\t", b" "):  # folded continuation lines
        end = body.index(b"\r\n", end + 2)
    return body[: end + 2].decode(), body[end + 2:]


# --- tests ----------------------------------------------------------------------------------------------


async def test_auth_plain_queues_the_message_after_the_puback(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    data = message(subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?= from the app")
    rcpts = ["a@rcpt.example.com", "b@other.example.org"]
    seen = await asyncio.to_thread(send, ingest.port, account, data, rcpts)

    assert seen.data is not None and seen.data.code == 250
    assert seen.data.text.startswith("2.0.0 Ok: queued as ")
    message_id = seen.data.text.rsplit(" ", 1)[1]
    envelope, body = await next_inbound(js)
    assert envelope.message_id == message_id
    assert envelope.account_id == account.account_id
    assert envelope.mail_from == SENDER
    assert list(envelope.recipients) == rcpts
    assert envelope.source == "smtp"
    assert envelope.subject == "Grüße from the app"
    assert envelope.body.WhichOneof("location") == "inline"
    received, rest = split_received(body)
    assert rest == data
    assert "from client.example.com ([127.0.0.1])" in received
    assert f"id {message_id}" in received and "with ESMTPA" in received
    assert f"(authenticated account {account.account_id})" in received
    assert account.smtp_password not in received and "for <" not in received  # no Bcc leak

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{ingest.ops_port}/metrics")).text
        assert (await http.get(f"http://127.0.0.1:{ingest.ops_port}/readyz")).status_code == 200
    assert "postwire_ingest_smtp_messages_accepted_total" in metrics
    assert 'postwire_ingest_smtp_auth_total{mechanism="PLAIN",result="success"}' in metrics


async def test_auth_login_without_initial_response(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()

    def run() -> Transaction:
        client = connect(ingest.port)
        try:
            login(client, account, "LOGIN", initial_response=False)  # 334 username, 334 password
            return transact(client, message(), ["one@rcpt.example.com"])
        finally:
            client.quit()

    seen = await asyncio.to_thread(run)
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert envelope.account_id == account.account_id
    assert list(envelope.recipients) == ["one@rcpt.example.com"]
    received, rest = split_received(body)
    assert "for <one@rcpt.example.com>;" in received and rest == message()


async def test_wrong_password_gets_535_and_the_session_continues(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    wrong = NewCredentials(account.account_id, account.name, "", account.smtp_username, "not-the-password")

    def run(mechanism: str) -> tuple[int, int]:
        client = connect(ingest.port)
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                login(client, wrong, mechanism)
            return failed.value.smtp_code, client.noop()[0]
        finally:
            client.quit()

    for mechanism in ("PLAIN", "LOGIN"):
        assert await asyncio.to_thread(run, mechanism) == (535, 250)
    assert await inbound_count(js) == 0


async def test_no_open_relay_without_auth(
        start_ingest: StartIngest, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    seen = await asyncio.to_thread(send, ingest.port, None, message(), ["victim@rcpt.example.com"])
    assert seen.mail is not None and seen.mail.code == 250  # MAIL before AUTH is fine ...
    assert [(r.code, r.text) for r in seen.rcpts] == [(530, "5.7.0 Authentication required")]  # ... RCPT not
    assert seen.data is None
    assert await inbound_count(js) == 0


async def test_trusted_network_submits_for_the_trusted_account(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest(trusted_networks="10.0.0.0/8, 127.0.0.1/32", trusted_account=account.name)
    seen = await asyncio.to_thread(send, ingest.port, None, message(), ["x@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert envelope.account_id == account.account_id
    assert f"(trusted network account {account.account_id})" in split_received(body)[0]


async def test_auth_needs_tls_unless_allowed(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest(smtp_allow_insecure_auth=False)

    def plain_text_attempt() -> tuple[bool, bool, tuple[int, bytes], tuple[int, bytes]]:
        client = connect(ingest.port)
        try:
            offered = client.has_extn("auth"), client.has_extn("starttls")
            return (*offered, client.docmd("AUTH", f"PLAIN {plain_token(account)}"),
                    client.docmd("AUTH", "LOGIN"))
        finally:
            client.quit()

    auth_offered, starttls_offered, plain, login_ = await asyncio.to_thread(plain_text_attempt)
    assert not auth_offered and starttls_offered
    for reply in (plain, login_):
        assert reply[0] == 538 and b"5.7.11 Encryption required" in reply[1]

    seen = await asyncio.to_thread(send, ingest.port, account, message(), ["t@x.example.com"], starttls=True)
    assert seen.data is not None and seen.data.code == 250
    _, body = await next_inbound(js)
    received = split_received(body)[0]
    assert "with ESMTPSA" in received and "(using TLSv1." in received
    assert (ingest.settings.data_dir / "tls" / "selfsigned.pem").exists()


async def test_oversize_is_refused_with_552(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest(max_message_size=100_000)
    big = message(body_lines=2000)
    assert len(big) > 100_000

    def run() -> tuple[bool, str, Transaction, Transaction]:
        client = connect(ingest.port)
        try:
            login(client, account)
            assert client.has_extn("enhancedstatuscodes") and client.has_extn("8bitmime")
            advertised = client.has_extn("size"), client.esmtp_features["size"]
            declared = transact(client, big, ["a@rcpt.example.com"], mail_options=(f"SIZE={len(big)}",))
            undeclared = transact(client, big, ["a@rcpt.example.com"])
            return *advertised, declared, undeclared
        finally:
            client.quit()

    has_size, size, declared, undeclared = await asyncio.to_thread(run)
    assert has_size and size == "100000"
    assert declared.mail is not None and declared.mail.code == 552 and declared.mail.text.startswith("5.3.4 ")
    assert undeclared.data is not None and undeclared.data.code == 552
    assert undeclared.data.text.startswith("5.3.4 ")
    assert await inbound_count(js) == 0


@pytest.mark.parametrize("size_mb", [2, 20])
async def test_large_message_goes_through_the_object_store(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext, size_mb: int) -> None:
    ingest = await start_ingest()
    data = message(body_lines=size_mb * 1024 * 1024 // 78, line=b"0123456789abcdef" * 4 + b"ghijklmnopstuv")
    assert len(data) > (size_mb - 0.1) * 1024 * 1024
    seen = await asyncio.to_thread(send, ingest.port, account, data, ["big@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert envelope.body.WhichOneof("location") == "object_name"
    assert envelope.body.size == len(body)
    assert split_received(body)[1] == data


async def test_nats_down_answers_451_and_queues_nothing(
        start_ingest: StartIngest, account: NewCredentials, nats_server: NatsServer) -> None:
    ingest = await start_ingest()
    readyz = f"http://127.0.0.1:{ingest.ops_port}/readyz"
    await nats_server.stop()
    async with httpx.AsyncClient() as http:
        async def not_ready() -> bool:
            return (await http.get(readyz)).status_code == 503

        await eventually(not_ready)
        seen = await asyncio.to_thread(send, ingest.port, account, message(), ["r@rcpt.example.com"])
        assert seen.data is not None
        assert (seen.data.code, seen.data.text) == (451, "4.3.0 Queue unavailable, try again later")

        await nats_server.start()

        async def ready() -> bool:
            return (await http.get(readyz)).status_code == 200

        await eventually(ready)
    nc = await nats.connect(nats_server.url)
    try:
        assert await inbound_count(nc.jetstream()) == 0
    finally:
        await nc.close()


async def test_address_syntax_and_recipient_limit(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest(max_recipients=2)

    def run() -> tuple[tuple[int, bytes], Transaction]:
        client = connect(ingest.port)
        try:
            login(client, account)
            bad_sender = client.mail("no-at-sign")
            client.rset()
            seen = transact(client, message(), [
                "a@rcpt.example.com", "bad..dots@rcpt.example.com", "user@localhost", "b@rcpt.example.com",
                "a@rcpt.example.com", "c@rcpt.example.com",
            ])
            return bad_sender, seen
        finally:
            client.quit()

    bad_sender, seen = await asyncio.to_thread(run)
    assert bad_sender[0] == 553 and bad_sender[1].startswith(b"5.1.7 ")
    assert [r.code for r in seen.rcpts] == [250, 553, 553, 250, 250, 452]
    assert seen.rcpts[1].text.startswith("5.1.3 ") and "fully qualified" in seen.rcpts[2].text
    assert seen.rcpts[5].text == "4.5.3 Too many recipients"
    assert seen.data is not None and seen.data.code == 250
    envelope, _ = await next_inbound(js)
    assert list(envelope.recipients) == ["a@rcpt.example.com", "b@rcpt.example.com"]


async def test_shutdown_lets_an_open_transaction_finish(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    client = await asyncio.to_thread(connect, ingest.port)
    try:
        await asyncio.to_thread(login, client, account)
        assert (await asyncio.to_thread(client.mail, SENDER))[0] == 250
        assert (await asyncio.to_thread(client.rcpt, "late@rcpt.example.com"))[0] == 250
        ingest.stop.set()  # SIGTERM while the client is mid-transaction
        code, text = await asyncio.to_thread(client.data, message())
        assert code == 250, text
        await ingest.task  # then the server says goodbye, closes the connection and returns
        assert (await asyncio.to_thread(client.getreply))[0] == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            await asyncio.to_thread(client.getreply)
    finally:
        client.close()
    envelope, _ = await next_inbound(js)
    assert list(envelope.recipients) == ["late@rcpt.example.com"]


async def test_successful_logins_are_cached_failures_are_not(pg_url: str, account: NewCredentials) -> None:
    engine = make_engine(pg_url)
    real_check = database_check(make_sessionmaker(engine))
    checked: list[str] = []
    now = [0.0]

    async def counting_check(username: str, password: str) -> SmtpLogin | None:
        checked.append(username)
        return await real_check(username, password)

    verifier = LoginVerifier(counting_check, ttl_s=60, clock=lambda: now[0])
    try:
        user, password = account.smtp_username, account.smtp_password
        login = await verifier.verify(user, password)
        assert login is not None and login.account_id == account.account_id
        assert login.defaults == LoginDefaults()
        await set_login_defaults(pg_url, user, track_opens=True)
        assert await verifier.verify(user, password) == login  # cached: the switches it was verified with
        assert len(checked) == 1
        assert await verifier.verify(user, password + "x") is None
        assert await verifier.verify(user, password + "x") is None
        assert len(checked) == 3
        now[0] = 61.0  # past the TTL: verified again, with the login's current switches
        again = await verifier.verify(user, password)
        assert again is not None and again.defaults == LoginDefaults(track_opens=True)
        assert len(checked) == 4
    finally:
        await engine.dispose()


async def test_unknown_trusted_account_fails_at_start(start_ingest: StartIngest) -> None:
    with pytest.raises(LookupError, match="no-such-account"):
        await start_ingest(trusted_networks="127.0.0.1/32", trusted_account="no-such-account")


async def test_auth_inside_a_transaction_is_refused(
        start_ingest: StartIngest, account: NewCredentials) -> None:
    ingest = await start_ingest()

    def run() -> tuple[int, int]:
        client = connect(ingest.port)
        try:
            client.mail(SENDER)
            in_transaction = client.docmd("AUTH", f"PLAIN {plain_token(account)}")[0]
            client.rset()
            return in_transaction, client.docmd("AUTH", f"PLAIN {plain_token(account)}")[0]
        finally:
            client.quit()

    assert await asyncio.to_thread(run) == (503, 235)


async def test_implicit_tls_port_465_takes_auth_and_mail_from_the_first_byte(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    smtps = free_port()
    await start_ingest(smtp_allow_insecure_auth=False, smtps_port=smtps)

    def over_tls() -> tuple[bool, bool, dict[str, tuple[int, bytes]]]:
        client = smtplib.SMTP_SSL("127.0.0.1", smtps, context=insecure_tls(), timeout=30)
        try:
            client.ehlo("client.test")
            offered = client.has_extn("auth"), client.has_extn("starttls")
            client.login(account.smtp_username, account.smtp_password)
            refused = client.sendmail("a@example.com", ["t@x.example.com"], message())
            return *offered, refused
        finally:
            client.quit()

    auth_offered, starttls_offered, refused = await asyncio.to_thread(over_tls)
    assert auth_offered and not starttls_offered and refused == {}
    _, body = await next_inbound(js)
    assert "(using TLSv1." in split_received(body)[0]


# --- send options: the login's switches, overridden per message by option headers ---------------------


def options_of(envelope: InboundMessage) -> dict[str, bool]:
    o = envelope.options
    assert o.HasField("track_bounces")  # always explicit from SMTP
    return {"inline_css": o.inline_css, "track_clicks": o.track_clicks, "track_opens": o.track_opens,
            "track_bounces": o.track_bounces, "prevent_scam": o.prevent_scam}


def with_headers(data: bytes, *headers: str) -> bytes:
    """``data`` with ``headers`` inserted after its first header line."""
    first, rest = data.split(b"\r\n", 1)
    return first + b"\r\n" + "".join(h + "\r\n" for h in headers).encode() + rest


async def test_login_defaults_reach_the_message_and_option_headers_override_them(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str, js: JetStreamContext) -> None:
    await set_login_defaults(pg_url, account.smtp_username, inline_css=False, track_clicks=True,
                             prevent_scam=True)
    ingest = await start_ingest()
    plain = message(subject="defaults")
    seen = await asyncio.to_thread(send, ingest.port, account, plain, ["a@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert options_of(envelope) == {"inline_css": False, "track_clicks": True, "track_opens": False,
                                    "track_bounces": True, "prevent_scam": True}
    assert list(envelope.tags) == [] and split_received(body)[1] == plain

    tagged = with_headers(
        message(subject="overridden"),
        "x-smtpeter-trackclicks: false",
        "X-Postwire-TrackOpens: true",
        "x-smtpeter-tags: newsletter,\r\n march-2026",  # folded
        "X-SMTPeter-InlineCSS: perhaps",  # unreadable: ignored, the login's default holds
        "X-Postwire-PreventScam: off",
    )
    seen = await asyncio.to_thread(send, ingest.port, account, tagged, ["a@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert options_of(envelope) == {"inline_css": False, "track_clicks": False, "track_opens": True,
                                    "track_bounces": True, "prevent_scam": False}
    assert list(envelope.tags) == ["newsletter", "march-2026"]
    assert envelope.subject == "overridden"
    received, rest = split_received(body)
    assert rest == message(subject="overridden")  # exactly the message without the option headers
    assert b"smtpeter" not in body.lower() and b"x-postwire" not in body.lower()
    assert "(authenticated account" in received


async def test_stream_header_chooses_the_lane_and_is_removed_else_the_defaults_hold(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    cases = [
        (message(subject="one"), ["a@rcpt.example.com"], "transactional"),
        (message(subject="two"), ["a@rcpt.example.com", "b@rcpt.example.com"], "bulk"),
        (with_headers(message(subject="list"), "List-Unsubscribe: <mailto:u@example.com>"),
         ["a@rcpt.example.com"], "bulk"),
        (with_headers(message(subject="asked"), "X-Postwire-Stream: Transactional"),
         ["a@rcpt.example.com", "b@rcpt.example.com"], "transactional"),
        (with_headers(message(subject="asked bulk"), "X-Postwire-Stream: bulk"), ["a@rcpt.example.com"],
         "bulk"),
        # unreadable: removed, the default holds (SMTP cannot explain a refusal as well as the API)
        (with_headers(message(subject="odd"), "X-Postwire-Stream: newsletter"), ["a@rcpt.example.com"],
         "transactional"),
    ]
    for data, rcpts, stream in cases:
        seen = await asyncio.to_thread(send, ingest.port, account, data, rcpts)
        assert seen.data is not None and seen.data.code == 250
        envelope, body = await next_inbound(js)
        assert envelope.stream == stream, envelope.subject
        assert b"x-postwire-stream" not in body.lower()


async def test_the_login_s_default_stream_applies_unless_the_message_names_one(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str, js: JetStreamContext) -> None:
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine).begin() as session:
            login = await set_smtp_login_stream(session, account.smtp_username, "bulk")
            assert login is not None and login.default_stream == "bulk"
    finally:
        await engine.dispose()
    ingest = await start_ingest()
    for data, stream in [(message(subject="newsletter"), "bulk"),
                         (with_headers(message(subject="reset"), "X-Postwire-Stream: transactional"),
                          "transactional")]:
        seen = await asyncio.to_thread(send, ingest.port, account, data, ["a@rcpt.example.com"])
        assert seen.data is not None and seen.data.code == 250
        envelope, _ = await next_inbound(js)
        assert envelope.stream == stream


async def test_trusted_network_mail_gets_the_standard_switches(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str, js: JetStreamContext) -> None:
    # the account's own login differs: trusted-network mail has no login, so it does not apply
    await set_login_defaults(pg_url, account.smtp_username, inline_css=False, track_opens=True)
    ingest = await start_ingest(trusted_networks="127.0.0.1/32", trusted_account=account.account_id)
    data = with_headers(message(), "X-Postwire-TrackClicks: yes", "X-Postwire-Tags: trusted")
    seen = await asyncio.to_thread(send, ingest.port, None, data, ["x@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, body = await next_inbound(js)
    assert options_of(envelope) == {"inline_css": True, "track_clicks": True, "track_opens": False,
                                    "track_bounces": True, "prevent_scam": False}
    assert list(envelope.tags) == ["trusted"] and split_received(body)[1] == message()


async def test_a_changed_switch_applies_to_new_sessions(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str, js: JetStreamContext) -> None:
    ingest = await start_ingest(smtp_auth_cache_ttl_s=0)  # no cache: the next login sees the change
    before = await asyncio.to_thread(connect, ingest.port)
    try:
        await asyncio.to_thread(login, before, account)
        await set_login_defaults(pg_url, account.smtp_username, track_opens=True, track_bounces=False)
        seen = await asyncio.to_thread(send, ingest.port, account, message(), ["new@rcpt.example.com"])
        assert seen.data is not None and seen.data.code == 250
        envelope, _ = await next_inbound(js)
        assert options_of(envelope)["track_opens"] and not options_of(envelope)["track_bounces"]
        # a session that logged in before the change keeps the switches it logged in with
        seen = await asyncio.to_thread(transact, before, message(), ["old@rcpt.example.com"])
        assert seen.data is not None and seen.data.code == 250
    finally:
        await asyncio.to_thread(before.quit)
    envelope, _ = await next_inbound(js)
    assert list(envelope.recipients) == ["old@rcpt.example.com"]
    assert not options_of(envelope)["track_opens"] and options_of(envelope)["track_bounces"]


# --- DSN (RFC 3461) and the null sender ------------------------------------------------------------------


async def test_dsn_parameters_travel_with_the_message(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    long_orcpt = "o" * 470 + "@rcpt.example.com"  # the RCPT line is longer than 512: RFC 3461 5 allows it

    def run() -> tuple[bool, list[tuple[int, bytes]]]:
        client = connect(ingest.port)
        try:
            login(client, account)
            replies = [
                client.mail(SENDER, ["RET=HDRS", "ENVID=Order+2B42+3Dx", "SIZE=1000"]),
                client.rcpt("a@rcpt.example.com", ["NOTIFY=SUCCESS,FAILURE",
                                                   "ORCPT=rfc822;Original+2BUser@Example.COM"]),
                client.rcpt("b@rcpt.example.com", ["notify=never"]),
                client.rcpt("c@rcpt.example.com"),
                client.rcpt("d@rcpt.example.com", ["NOTIFY=DELAY", f"ORCPT=rfc822;{long_orcpt}"]),
                client.data(message()),
            ]
            return client.has_extn("dsn"), replies
        finally:
            client.quit()

    has_dsn, replies = await asyncio.to_thread(run)
    assert has_dsn
    assert [code for code, _ in replies] == [250, 250, 250, 250, 250, 250], replies
    envelope, _ = await next_inbound(js)
    assert (envelope.dsn.ret, envelope.dsn.envid) == ("HDRS", "Order+42=x")
    assert dict(envelope.recipient_dsn).keys() == {"a@rcpt.example.com", "b@rcpt.example.com",
                                                   "d@rcpt.example.com"}
    a, b, d = (envelope.recipient_dsn[f"{r}@rcpt.example.com"] for r in "abd")
    assert (list(a.notify), a.orcpt) == (["SUCCESS", "FAILURE"], "rfc822;Original+User@Example.COM")
    assert (list(b.notify), b.orcpt) == (["NEVER"], "")
    assert (list(d.notify), d.orcpt) == (["DELAY"], f"rfc822;{long_orcpt}")


async def test_without_dsn_parameters_no_dsn_is_recorded(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    seen = await asyncio.to_thread(send, ingest.port, account, message(), ["a@rcpt.example.com"])
    assert seen.data is not None and seen.data.code == 250
    envelope, _ = await next_inbound(js)
    assert not envelope.HasField("dsn") and len(envelope.recipient_dsn) == 0


async def test_bad_and_unknown_parameters_are_refused(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()

    def run() -> dict[str, tuple[int, str]]:
        client = connect(ingest.port)
        try:
            login(client, account)
            got: dict[str, tuple[int, str]] = {}
            for name, options in [("ret", ["RET=ALL"]), ("envid", ["ENVID=bad+zz"]), ("envid_twice",
                                  ["ENVID=a", "ENVID=b"]), ("envid_ctl", ["ENVID=a+0Db"]),
                                  ("unknown_mail", ["FOO=bar"])]:
                got[name] = _decode(client.mail(SENDER, options))
            assert client.mail(SENDER)[0] == 250
            for name, options in [("never_and", ["NOTIFY=NEVER,SUCCESS"]), ("notify", ["NOTIFY=SOMETIMES"]),
                                  ("orcpt", ["ORCPT=user@example.com"]), ("notify_empty", ["NOTIFY="]),
                                  ("unknown_rcpt", ["XFORWARD=1"])]:
                got[name] = _decode(client.rcpt("a@rcpt.example.com", options))
            got["ok"] = _decode(client.rcpt("a@rcpt.example.com", ["NOTIFY=FAILURE"]))
            got["data"] = _decode(client.data(message()))
            client.helo("client.example.com")  # plain SMTP: no parameters at all
            got["helo"] = _decode(client.mail(SENDER, ["RET=FULL"]))
            return got
        finally:
            client.quit()

    got = await asyncio.to_thread(run)
    for name in ("ret", "envid", "envid_twice", "envid_ctl", "never_and", "notify", "orcpt", "notify_empty"):
        assert got[name][0] == 501 and got[name][1].startswith("5.5.4 "), (name, got[name])
    assert "FULL or HDRS" in got["ret"][1] and "xtext" in got["envid"][1]
    assert "more than once" in got["envid_twice"][1] and "printable" in got["envid_ctl"][1]
    assert got["never_and"][1] == "5.5.4 NOTIFY=NEVER cannot be combined with SUCCESS, FAILURE or DELAY"
    assert "addr-type;xtext" in got["orcpt"][1]
    assert got["unknown_mail"] == (555, "5.5.4 MAIL FROM parameters not recognized or not implemented")
    assert got["unknown_rcpt"] == (555, "5.5.4 RCPT TO parameters not recognized or not implemented")
    assert got["ok"][0] == 250 and got["data"][0] == 250
    assert got["helo"][0] == 501
    envelope, _ = await next_inbound(js)
    assert list(envelope.recipient_dsn["a@rcpt.example.com"].notify) == ["FAILURE"]
    assert not envelope.HasField("dsn")


async def test_null_sender_is_accepted_and_queued_with_an_empty_mail_from(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()

    def run() -> tuple[Transaction, tuple[int, bytes]]:
        client = connect(ingest.port)
        try:
            login(client, account)
            seen = transact(client, message(), ["a@rcpt.example.com", "b@rcpt.example.com"], sender="")
            client.mail("", ["RET=HDRS"])
            nested = client.mail("")  # the null sender still opens a transaction: a second MAIL is nested
            client.rset()
            return seen, nested
        finally:
            client.quit()

    seen, nested = await asyncio.to_thread(run)
    assert seen.mail is not None and (seen.mail.code, seen.mail.text) == (250, "2.1.0 Ok")
    assert seen.data is not None and seen.data.code == 250
    assert nested[0] == 503
    envelope, body = await next_inbound(js)
    assert envelope.mail_from == ""
    assert list(envelope.recipients) == ["a@rcpt.example.com", "b@rcpt.example.com"]
    assert split_received(body)[1] == message()
