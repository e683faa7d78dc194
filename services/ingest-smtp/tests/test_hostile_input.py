"""Hostile and broken SMTP clients against the real server: in-process ingest-smtp on 127.0.0.1, a real
nats-server and PostgreSQL. The client is hand-driven (asyncio streams), so every byte on the wire is the
test's choice; what reaches INBOUND is counted from the stream itself.

docs/reliability.md lists each case with the reply it gets.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import tracemalloc
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from postwire.core.bodies import BodyStore
from postwire.core.topology import INBOUND
from postwire.db.accounts import NewCredentials, create_account
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.ingest_smtp import replies
from postwire.ingest_smtp.tls import SELF_SIGNED_NAME, load_context
from postwire.testing.fixtures import eventually
from postwire.testing.ports import free_port
from postwire.v1.envelope_pb2 import InboundMessage

StartIngest = Callable[..., Awaitable[Any]]  # conftest.start_ingest: (**settings) -> Ingest
READ_DEADLINE_S = 30.0
NO_LIMITS_FOR_LOOPBACK = {"smtp_limit_exempt_networks": ""}  # loopback is exempt by default
RCPT = "someone@rcpt.example.com"


# --- a hand-driven client -----------------------------------------------------------------------------------


class Raw:
    """One SMTP connection, bytes exactly as the test writes them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, *, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), ssl=tls,
                                                       server_hostname="localhost" if tls else None)
        return cls(reader, writer)

    @classmethod
    async def greeted(cls, port: int, **kwargs: Any) -> Raw:
        raw = await cls.open(port, **kwargs)
        assert (await raw.reply())[0] == 220
        return raw

    async def send(self, data: bytes | memoryview) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self) -> tuple[int, str]:
        """The next reply: its code and the text of its last line."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), READ_DEADLINE_S)
            assert line.endswith(b"\r\n"), f"connection closed, or not a reply line: {line!r}"
            if line[3:4] != b"-":
                return int(line[:3]), line[4:-2].decode()

    async def cmd(self, line: str | bytes) -> tuple[int, str]:
        await self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def rest(self) -> bytes:
        """Everything the server still sends until it closes the connection (which it must)."""
        return await asyncio.wait_for(self.reader.read(), READ_DEADLINE_S)

    async def login(self, creds: NewCredentials) -> tuple[int, str]:
        assert (await self.cmd("EHLO client.example.com"))[0] == 250
        token = base64.b64encode(f"\0{creds.smtp_username}\0{creds.smtp_password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def envelope(self, rcpts: tuple[str, ...] = (RCPT,)) -> None:
        assert await self.cmd("MAIL FROM:<app@sender.example.com>") == (250, "2.1.0 Ok")
        for rcpt in rcpts:
            assert await self.cmd(f"RCPT TO:<{rcpt}>") == (250, "2.1.5 Ok")

    async def data(self, wire: bytes) -> tuple[int, str]:
        """DATA, then ``wire`` exactly as given: it must end with the terminating CRLF.CRLF itself."""
        assert await self.cmd("DATA") == (354, "End data with <CR><LF>.<CR><LF>")
        await self.send(wire)
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


@asynccontextmanager
async def session(port: int, **kwargs: Any) -> AsyncIterator[Raw]:
    raw = await Raw.greeted(port, **kwargs)
    try:
        yield raw
    finally:
        await raw.close()


def rejected(reason: str) -> float:
    """The server runs in this process: read its counter directly."""
    value = REGISTRY.get_sample_value("postwire_ingest_smtp_messages_rejected_total", {"reason": reason})
    return value or 0.0


async def inbound_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(INBOUND)).state.messages)


async def inbound_bodies(js: JetStreamContext) -> list[bytes]:
    sub = await js.pull_subscribe("inbound.>", durable=f"reader-{uuid.uuid4().hex[:8]}", stream=INBOUND)
    try:
        msgs = await sub.fetch(100, timeout=5)
    finally:
        await sub.unsubscribe()
    store = BodyStore(js, 0)
    return [await store.get(InboundMessage.FromString(m.data).body) for m in msgs]


def without_received(body: bytes) -> bytes:
    """What the client sent: our Received header (with its folded lines) removed."""
    assert body.startswith(b"Received: ")
    end = body.index(b"\r\n")
    while body[end + 2:end + 3] in (b"\t", b" "):
        end = body.index(b"\r\n", end + 2)
    return body[end + 2:]


async def new_account(pg_url: str) -> NewCredentials:
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            creds = await create_account(s, f"hostile-{uuid.uuid4().hex[:10]}", allow_unverified_from=True)
            await s.commit()
    finally:
        await engine.dispose()
    return creds


def wrong(creds: NewCredentials) -> NewCredentials:
    return NewCredentials(creds.account_id, creds.name, "", creds.smtp_username, "not-the-password")


GOOD = b"Subject: fine\r\n\r\na proper message\r\n.\r\n"


# --- 1. SMTP smuggling --------------------------------------------------------------------------------------

SMUGGLED = (b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@rcpt.example.com>\r\nDATA\r\n"
            b"From: ceo@sender.example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n")
FAKE_ENDS = {
    "<LF>.<LF>": b"\n.\n",
    "<CR>.<CR>": b"\r.\r",
    "<LF>.<CR><LF>": b"\n.\r\n",
    "<CR><LF>.<LF>": b"\r\n.\n",
    "<CR>.<CR><LF>": b"\r.\r\n",
    "<CR><LF>.<CR>": b"\r\n.\r",
}


async def test_smtp_smuggling_is_refused_whole_and_never_splits(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    before = rejected("bare_line_ending")
    got: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {}
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        for name, fake_end in FAKE_ENDS.items():
            await c.envelope()
            refused = await c.data(b"Subject: outer\r\n\r\nouter body" + fake_end + SMUGGLED + b".\r\n")
            # had the fake end ended the data, the smuggled commands would answer before this NOOP
            got[name] = refused, await c.cmd("NOOP")
        await c.envelope()
        # Unix line ends throughout: "\n.\r\n" is no end either, only the CRLF.CRLF after it
        unix = await c.data(b"Subject: unix line ends\n\nbody\n.\r\n.\r\n")
        assert await inbound_count(js) == 0
        await c.envelope()
        assert (await c.data(GOOD))[0] == 250  # the session is still usable, and counting works
    for name, (refused, noop) in got.items():
        expected = replies.BARE_LF if b"\n" in FAKE_ENDS[name].replace(b"\r\n", b"") else replies.BARE_CR
        assert f"{refused[0]} {refused[1]}" == expected, name
        assert noop == (250, "OK"), name
    assert unix == (550, replies.BARE_LF[4:])
    assert [without_received(b) for b in await inbound_bodies(js)] == [GOOD[:-3]]
    assert rejected("bare_line_ending") - before == len(FAKE_ENDS) + 1


async def test_nul_in_data_is_refused_and_8bit_and_malformed_headers_are_accepted_unchanged(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    eight_bit = "Subject: Grüße\r\nFrom: Jürgen <app@sender.example.com>\r\n\r\nÄpfel und Birnen\r\n".encode()
    malformed = (b"Subject: =?utf-8?q?never=ended\r\nthis header line has no colon\r\n"
                 b"X-Latin1: caf\xe9\r\n\r\nbody\r\n")
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        await c.envelope()
        nul = await c.data(b"Subject: nul\r\n\r\nbefore\0after\r\n.\r\n")
        await c.envelope()  # 8-bit without BODY=8BITMIME: accepted, as Postfix does
        plain = await c.data(eight_bit + b".\r\n")
        assert await c.cmd("MAIL FROM:<app@sender.example.com> BODY=8BITMIME") == (250, "2.1.0 Ok")
        assert await c.cmd(f"RCPT TO:<{RCPT}>") == (250, "2.1.5 Ok")
        declared = await c.data(eight_bit + b".\r\n")
        await c.envelope()
        broken = await c.data(malformed + b".\r\n")
    assert nul == (550, replies.NUL[4:])
    assert plain[0] == declared[0] == broken[0] == 250
    assert [without_received(b) for b in await inbound_bodies(js)] == [eight_bit, eight_bit, malformed]


async def test_smtputf8_is_not_offered_and_non_ascii_addresses_are_refused(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    async with session(ingest.port) as c:
        await c.send(b"EHLO client.example.com\r\n")
        ehlo = await asyncio.wait_for(c.reader.readuntil(b"250 HELP\r\n"), READ_DEADLINE_S)
        assert b"SMTPUTF8" not in ehlo and b"8BITMIME" in ehlo
        with_param = await c.cmd("MAIL FROM:<app@sender.example.com> SMTPUTF8")
        utf8_sender = await c.cmd("MAIL FROM:<jürgen@sender.example.com>".encode())
        utf8_sender_param = await c.cmd("MAIL FROM:<jürgen@sender.example.com> SMTPUTF8".encode())
        assert (await c.login(account))[0] == 235
        await c.envelope(())
        utf8_rcpt = await c.cmd("RCPT TO:<zoë@rcpt.example.com>".encode())
        assert await c.cmd("RSET") == (250, "OK")
    assert with_param == (555, "5.5.4 SMTPUTF8 is not supported, addresses must be ASCII")
    non_ascii = (553, "5.6.7 Non-ASCII characters need SMTPUTF8, which this server does not offer")
    assert utf8_sender == utf8_sender_param == utf8_rcpt == non_ascii
    assert await inbound_count(js) == 0


# --- 2. over-long lines and huge headers --------------------------------------------------------------------


async def test_overlong_command_lines_get_500_and_the_session_goes_on(start_ingest: StartIngest) -> None:
    ingest = await start_ingest()
    async with session(ingest.port) as c:
        assert (await c.cmd("EHLO client.example.com"))[0] == 250
        over_512 = await c.cmd("NOOP " + "x" * 600)
        huge = await c.cmd(b"NOOP " + b"x" * 1_000_000)  # read and dropped piecewise, never buffered whole
        mail_over_dsn_room = await c.cmd("MAIL FROM:<app@sender.example.com> ENVID=" + "x" * 700)
        assert await c.cmd("NOOP") == (250, "OK")
    too_long = (500, "5.5.2 Command line too long (RFC 5321 4.5.3.1.4 allows 512 octets)")
    assert over_512 == huge == mail_over_dsn_room == too_long


async def test_text_lines_over_998_are_refused(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    longest = b"Subject: longest line\r\n\r\n" + b"x" * 998 + b"\r\n"
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        await c.envelope()
        one_over = await c.data(b"Subject: 999\r\n\r\n" + b"x" * 999 + b"\r\n.\r\n")
        await c.envelope()
        megabyte = await c.data(b"Subject: 1 MB line\r\n\r\n" + b"y" * 1_000_000 + b"\r\n.\r\n")
        await c.envelope()
        at_limit = await c.data(longest + b".\r\n")
    assert one_over == megabyte == (500, replies.LINE_TOO_LONG[4:])
    assert at_limit[0] == 250
    assert [without_received(b) for b in await inbound_bodies(js)] == [longest]


async def test_header_flood_is_refused_within_the_size_limit_in_memory(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    """1.5 MB of 4-byte header lines against a 1 MB limit: refused with 552, and the server never holds
    more than the limit (aiosmtpd's own loop kept ~60 bytes per line: ~17 MB before it gave up).
    (test_header_block_over_256k... sends 10 MB of headers; here tracemalloc makes every line slow.)"""
    limit = 1024 * 1024
    ingest = await start_ingest(max_message_size=limit)
    flood = b"X:\r\n" * (3 * limit // 8) + b"\r\nbody\r\n.\r\n"
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        await c.envelope()
        assert await c.cmd("DATA") == (354, "End data with <CR><LF>.<CR><LF>")
        tracemalloc.start()
        try:
            view = memoryview(flood)
            for i in range(0, len(flood), 64 * 1024):
                await c.send(view[i:i + 64 * 1024])
            reply = await asyncio.wait_for(c.reply(), 300)  # tracemalloc slows the server down a lot
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert reply == (552, replies.TOO_BIG[4:])
    assert peak < 3 * limit, peak
    assert await inbound_count(js) == 0


async def test_header_block_over_256k_is_refused_and_the_server_stays_responsive(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    """Within the 25 MB size limit, a 10 MB header block (one folded field) is refused before anything
    parses it; 200 KB of headers still go through."""
    ingest = await start_ingest()
    def folded(size: int) -> bytes:
        more = b" " + b"y" * 70 + b"\r\n"
        return b"Subject: x\r\nX-Fold: a\r\n" + more * (size // len(more)) + b"\r\nbody\r\n.\r\n"

    async with session(ingest.port) as c, session(ingest.port) as other:
        assert (await c.login(account))[0] == 235
        await c.envelope()
        huge = await c.data(folded(10 * 1024 * 1024))
        assert await other.cmd("NOOP") == (250, "OK")
        await c.envelope()
        fine = await c.data(folded(200 * 1024))
    assert huge == (552, "5.3.4 Message header block exceeds 262144 octets")
    assert fine[0] == 250
    assert await inbound_count(js) == 1


# --- 4. unknown commands and the error limit ----------------------------------------------------------------


async def test_unknown_commands_get_500_and_20_errors_end_the_session(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    c = await Raw.greeted(ingest.port)
    try:
        assert (await c.login(account))[0] == 235
        first = [await c.cmd(f"XBOGUS{i}") for i in range(10)]  # aiosmtpd alone hung up after five
        await c.envelope()
        assert (await c.data(GOOD))[0] == 250  # an accepted message: the count starts over
        more = [await c.cmd("BDAT 10") for _ in range(19)]
        assert await c.cmd("NOOP") == (250, "OK")
        await c.send(b"HELO\r\n")  # the 20th error since the message
        last = await c.rest()
    finally:
        await c.close()
    assert set(first) == set(more) == {(500, "5.5.2 Error: command not recognized")}
    assert last == b"501 Syntax: HELO hostname\r\n" + replies.TOO_MANY_ERRORS.encode() + b"\r\n"
    assert await inbound_count(js) == 1


# --- 5. pipelining abuse ------------------------------------------------------------------------------------


async def test_early_talker_is_refused_before_the_greeting(start_ingest: StartIngest) -> None:
    ingest = await start_ingest(smtp_greet_pause_s=1.0, **NO_LIMITS_FOR_LOOPBACK)
    talker = await Raw.open(ingest.port)
    try:
        await talker.send(b"EHLO client.example.com\r\nMAIL FROM:<a@sender.example.com>\r\n")
        assert await talker.rest() == replies.SYNC_ERROR.encode() + b"\r\n"  # no 220, nothing answered
    finally:
        await talker.close()
    async with session(ingest.port) as polite:  # waits for the 220 (after the pause)
        assert (await polite.cmd("EHLO client.example.com"))[0] == 250


async def test_content_before_354_is_never_a_message_nor_commands(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    ingest = await start_ingest()
    pipelined = (b"MAIL FROM:<app@sender.example.com>\r\nRCPT TO:<" + RCPT.encode() + b">\r\nDATA\r\n"
                 b"Subject: sent too early\r\n\r\nRSET\r\nMAIL FROM:<evil@attacker.example>\r\n.\r\n")
    async with session(ingest.port) as c:  # authenticated: DATA would have been accepted
        assert (await c.login(account))[0] == 235
        await c.send(pipelined)
        accepted_then_cut = [await c.reply(), await c.reply(), await c.rest()]
    async with session(ingest.port) as c:  # not authenticated: RCPT and DATA refused, body must not run
        await c.send(b"EHLO client.example.com\r\n" + pipelined)
        assert (await c.reply())[0] == 250
        refused_then_cut = [await c.reply(), await c.reply(), await c.rest()]
    sync = replies.SYNC_ERROR.encode() + b"\r\n"
    assert accepted_then_cut == [(250, "2.1.0 Ok"), (250, "2.1.5 Ok"), sync]
    assert refused_then_cut == [(250, "2.1.0 Ok"), (530, "5.7.0 Authentication required"), sync]
    assert await inbound_count(js) == 0


async def test_commands_sent_ahead_are_answered_in_order(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    """PIPELINING is not advertised, but a client that sends commands ahead (not content) gets each
    reply in order, as RFC 2920 would have it."""
    ingest = await start_ingest()
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        await c.send(f"MAIL FROM:<app@sender.example.com>\r\nRCPT TO:<a@x.example.com>\r\n"
                     f"RCPT TO:<bad..dots@x.example.com>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n".encode())
        replies_ = [(await c.reply())[0] for _ in range(5)]
        await c.send(GOOD)
        assert (await c.reply())[0] == 250
    assert replies_ == [250, 250, 553, 250, 354]
    assert await inbound_count(js) == 1


async def test_plaintext_sent_after_starttls_is_discarded(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    """CVE-2011-0411 style injection: commands in the same packet as STARTTLS must not run inside TLS."""
    ingest = await start_ingest(smtp_allow_insecure_auth=False)
    async with session(ingest.port) as c:
        assert (await c.cmd("EHLO client.example.com"))[0] == 250
        await c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n")
        assert await c.reply() == (220, "Ready to start TLS")
        await c.writer.start_tls(client_context(), server_hostname="localhost")
        assert (await c.cmd("EHLO client.example.com"))[0] == 250
        assert await c.cmd(f"RCPT TO:<{RCPT}>") == (503, "5.5.1 Error: need MAIL command")
    assert await inbound_count(js) == 0


# --- 6. slowloris -------------------------------------------------------------------------------------------


async def test_idle_and_trickling_clients_get_421_after_the_command_timeout(
        start_ingest: StartIngest) -> None:
    ingest = await start_ingest(smtp_timeout_s=1.0)
    async with session(ingest.port) as idle, session(ingest.port) as trickle:
        assert (await idle.cmd("EHLO client.example.com"))[0] == 250
        await trickle.send(b"EHL")  # half a command, never finished
        assert await idle.rest() == replies.COMMAND_TIMEOUT.encode() + b"\r\n"
        assert await trickle.rest() == replies.COMMAND_TIMEOUT.encode() + b"\r\n"


async def test_a_slow_message_gets_421_after_the_data_timeout(
        start_ingest: StartIngest, account: NewCredentials, js: JetStreamContext) -> None:
    """A line every 0.2 s keeps the connection busy, never idle: only the total DATA time cuts it."""
    ingest = await start_ingest(smtp_timeout_s=60.0, smtp_data_timeout_s=1.0)
    before = rejected("timeout")
    async with session(ingest.port) as c:
        assert (await c.login(account))[0] == 235
        await c.envelope()
        assert await c.cmd("DATA") == (354, "End data with <CR><LF>.<CR><LF>")

        async def trickle() -> None:
            try:
                while True:
                    await c.send(b"still sending\r\n")
                    await asyncio.sleep(0.2)
            except ConnectionError:
                pass

        sender = asyncio.create_task(trickle())
        try:
            rest = await c.rest()
        finally:
            sender.cancel()
    assert rest == replies.DATA_TIMEOUT.encode() + b"\r\n"
    assert rejected("timeout") - before == 1
    assert await inbound_count(js) == 0


# --- 7. per-IP connection limits and AUTH lockout -----------------------------------------------------------


async def test_open_connections_per_ip_are_limited_at_the_greeting(start_ingest: StartIngest) -> None:
    ingest = await start_ingest(smtp_max_connections_per_ip=2, smtp_connection_rate_per_ip=0,
                                **NO_LIMITS_FOR_LOOPBACK)
    first, second = await Raw.greeted(ingest.port), await Raw.greeted(ingest.port)
    third = await Raw.open(ingest.port)
    try:
        assert await third.rest() == b"421 4.7.0 Too many connections from 127.0.0.1\r\n"
        async with session(ingest.port, source="127.0.0.2") as elsewhere:  # another client IP
            assert await elsewhere.cmd("NOOP") == (250, "OK")
        assert await first.cmd("QUIT") == (221, "Bye")

        async def admitted() -> bool:
            c = await Raw.open(ingest.port)
            try:
                return (await c.reply())[0] == 220
            except AssertionError:  # refused: the closed connection has not been counted out yet
                return False
            finally:
                await c.close()

        await eventually(admitted)
    finally:
        for c in (first, second, third):
            await c.close()


async def test_connection_rate_per_ip_is_limited_at_the_greeting(start_ingest: StartIngest) -> None:
    ingest = await start_ingest(smtp_max_connections_per_ip=0, smtp_connection_rate_per_ip=3,
                                **NO_LIMITS_FOR_LOOPBACK)
    for _ in range(3):
        async with session(ingest.port) as c:
            assert await c.cmd("QUIT") == (221, "Bye")
    fourth = await Raw.open(ingest.port)
    try:
        assert await fourth.rest() == b"421 4.7.0 Too many connections from 127.0.0.1 in the last minute\r\n"
    finally:
        await fourth.close()


async def test_loopback_and_trusted_networks_are_exempt_from_connection_limits(
        start_ingest: StartIngest, account: NewCredentials) -> None:
    ingest = await start_ingest(smtp_max_connections_per_ip=1, smtp_connection_rate_per_ip=1)  # defaults:
    many = [await Raw.greeted(ingest.port) for _ in range(4)]  # loopback exempt
    for c in many:
        await c.close()
    trusted = await start_ingest(smtp_max_connections_per_ip=1, smtp_connection_rate_per_ip=1,
                                 trusted_networks="127.0.0.0/8", trusted_account=account.name,
                                 **NO_LIMITS_FOR_LOOPBACK)
    many = [await Raw.greeted(trusted.port) for _ in range(4)]
    for c in many:
        await c.close()


async def test_auth_failures_lock_out_the_ip_even_with_the_right_password(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str) -> None:
    ingest = await start_ingest(smtp_auth_failures_per_ip=3, **NO_LIMITS_FOR_LOOPBACK)
    other = await new_account(pg_url)
    before = rejected("auth_locked")
    async with session(ingest.port, source="127.0.0.5") as c:
        failures = [await c.login(wrong(account)) for _ in range(3)]
        right = await c.login(account)
        other_login = await c.login(other)
    async with session(ingest.port, source="127.0.0.6") as c:
        elsewhere = await c.login(account)
    assert failures == [(535, "5.7.8 Authentication credentials invalid")] * 3
    assert right == other_login == (454, "4.7.0 Too many failed logins, try again later")
    assert elsewhere == (235, "2.7.0 Authentication successful")
    assert rejected("auth_locked") - before == 2


async def test_auth_failures_lock_out_the_username_from_every_ip(
        start_ingest: StartIngest, account: NewCredentials, pg_url: str) -> None:
    ingest = await start_ingest(smtp_auth_failures_per_ip=10, smtp_auth_failures_per_user=4,
                                **NO_LIMITS_FOR_LOOPBACK)
    other = await new_account(pg_url)
    for source in ("127.0.0.2", "127.0.0.3"):  # guesses spread over addresses
        async with session(ingest.port, source=source) as c:
            assert [(await c.login(wrong(account)))[0] for _ in range(2)] == [535, 535]
    async with session(ingest.port, source="127.0.0.4") as c:
        locked = await c.login(account)
        unrelated = await c.login(other)
    assert locked == (454, "4.7.0 Too many failed logins, try again later")
    assert unrelated == (235, "2.7.0 Authentication successful")


# --- 9. TLS: 1.2 and 1.3 only -------------------------------------------------------------------------------


def client_context(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():  # TLSv1 / TLSv1_1 are deprecated names: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what old clients offer
    return ctx


async def old_tls_possible(version: ssl.TLSVersion, pem: Path) -> bool:
    """Control: can this machine's OpenSSL speak ``version`` at all? Try it against a permissive server."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = version
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(pem)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_ctx)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(version))
        writer.close()
        return True
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        server.close()
        await server.wait_closed()


async def negotiated(port: int, version: ssl.TLSVersion, *, implicit: bool) -> str:
    """The TLS version of a session, by STARTTLS or from the first byte; raises when the handshake fails."""
    if implicit:
        c = await Raw.greeted(port, tls=client_context(version))
    else:
        c = await Raw.greeted(port)
        assert (await c.cmd("EHLO client.example.com"))[0] == 250
        assert (await c.cmd("STARTTLS"))[0] == 220
        await c.writer.start_tls(client_context(version), server_hostname="localhost")
    try:
        assert (await c.cmd("EHLO client.example.com"))[0] == 250
        ssl_object = c.writer.get_extra_info("ssl_object")
        return str(ssl_object.version())
    finally:
        await c.close()


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit-tls"])
async def test_tls_is_1_2_or_newer(start_ingest: StartIngest, implicit: bool) -> None:
    smtps = free_port()
    ingest = await start_ingest(smtp_allow_insecure_auth=False, smtps_port=smtps)
    port = smtps if implicit else ingest.port
    assert await negotiated(port, ssl.TLSVersion.TLSv1_2, implicit=implicit) == "TLSv1.2"
    assert await negotiated(port, ssl.TLSVersion.TLSv1_3, implicit=implicit) == "TLSv1.3"
    pem = ingest.settings.data_dir / "tls" / SELF_SIGNED_NAME
    server_ctx = load_context(None, None, ingest.settings.data_dir, "smtp.postwire.test")
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        if not await old_tls_possible(old, pem):
            continue  # this OpenSSL cannot offer it at all: the minimum_version assertion above stands
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await negotiated(port, old, implicit=implicit)
    async with session(ingest.port) as c:  # the server is fine after the failed handshakes
        assert (await c.cmd("NOOP")) == (250, "OK")
