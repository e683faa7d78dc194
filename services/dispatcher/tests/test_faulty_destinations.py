"""Destinations that misbehave (issue 7): a server that accepts and then stalls, closes in the middle of
DATA, answers garbage, or breaks the TLS handshake. Each is timed out, deferred and retried, and the
message arrives once the server behaves; a stalled destination does not hold up mail to others.

The misbehaving server is a real TCP peer on loopback speaking (mostly) SMTP; it misbehaves for the first
``bad_sessions`` connections, then serves normally and records what it received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually

PLAIN = (b"From: sender@example.org\r\nTo: rcpt@example.test\r\nSubject: Faults\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello\r\n")


@dataclass
class FaultyMx:
    mode: str  # stall | close_mid_data | garbage | bad_tls | stall_domain
    bad_sessions: int = 1
    stall_domain: str = ""  # mode stall_domain: stall forever after a RCPT to this domain
    sessions: int = 0
    delivered: list[str] = field(default_factory=list)  # RCPT addresses of completed transactions
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)

    async def stop(self) -> None:
        for writer in list(self._open):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        bad = self.sessions <= self.bad_sessions
        self._open.add(writer)
        try:
            await self._talk(reader, writer, bad)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bad: bool) -> None:
        async def say(line: bytes) -> None:
            writer.write(line)
            await writer.drain()

        await say(b"220 faulty ESMTP\r\n")
        rcpts: list[str] = []
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb == b"EHLO":
                if bad and self.mode == "garbage":
                    await say(b"HELLO THERE, THIS IS NOT SMTP\r\n")
                    continue
                await say(b"250-faulty\r\n" + (b"250-STARTTLS\r\n" if bad and self.mode == "bad_tls" else b"")
                          + b"250 8BITMIME\r\n")
            elif verb == b"STARTTLS":
                await say(b"220 go ahead\r\n")
                await say(b"\x15\x03\x03\x00\x02\x02\x28")  # a TLS alert where a ServerHello belongs
                return
            elif verb == b"MAIL":
                if bad and self.mode == "stall":
                    await asyncio.sleep(3600)
                rcpts = []
                await say(b"250 ok\r\n")
            elif verb == b"RCPT":
                rcpt = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                if self.mode == "stall_domain" and rcpt.endswith("@" + self.stall_domain):
                    await asyncio.sleep(3600)
                rcpts.append(rcpt)
                await say(b"250 ok\r\n")
            elif verb == b"DATA":
                await say(b"354 go on\r\n")
                if bad and self.mode == "close_mid_data":
                    await reader.readline()
                    return  # the connection drops with the message half sent
                while (await reader.readline()) not in (b".\r\n", b""):
                    pass
                self.delivered += rcpts
                await say(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                await say(b"221 bye\r\n")
                return
            else:
                await say(b"250 ok\r\n")


@pytest_asyncio.fixture
async def faulty() -> AsyncIterator[list[FaultyMx]]:
    started: list[FaultyMx] = []
    yield started
    for mx in started:
        await mx.stop()


async def _start(faulty: list[FaultyMx], **kwargs: Any) -> FaultyMx:
    mx = FaultyMx(**kwargs)
    await mx.start()
    faulty.append(mx)
    return mx


@pytest.mark.parametrize("mode", ["stall", "close_mid_data", "garbage", "bad_tls"])
async def test_a_misbehaving_destination_is_deferred_and_retried(
        mode: str, faulty: list[FaultyMx], start_dispatcher: Any, submit: Any, events: Any,
        dns_server: DnsServer, domain: str) -> None:
    mx = await _start(faulty, mode=mode)
    dns_server.add_mail_domain(domain)
    rcpt = f"user@{domain}"
    await start_dispatcher(mx_port=mx.port, command_timeout_s=1.0)
    await submit([rcpt], PLAIN)

    [delivered] = await eventually(lambda: events.of("delivered", rcpt), timeout=60)
    assert not events.of("failed", rcpt)
    assert mx.delivered == [rcpt] and mx.sessions >= 2  # exactly once, on a later session
    if mode == "bad_tls":
        # opportunistic TLS (Postfix's "may"): a broken handshake is retried at once without TLS
        assert not events.of("deferred", rcpt)
        return
    deferred = events.of("deferred", rcpt)
    assert deferred and deferred[0].enhanced_status.startswith("4.")  # a temporary failure first
    assert delivered.attempt >= 1


@pytest.mark.slow
async def test_a_stalled_destination_cannot_take_every_sender(
        faulty: list[FaultyMx], start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer,
        domain: str) -> None:
    """Thirty messages to a domain whose server hangs after RCPT, then five to a healthy domain on the
    same server: the healthy ones are delivered while the stalled ones are still waiting."""
    stalled, healthy = f"stall-{domain}", f"ok-{domain}"
    mx = await _start(faulty, mode="stall_domain", stall_domain=stalled, bad_sessions=0)
    dns_server.add_mail_domain(stalled)
    dns_server.add_mail_domain(healthy)
    await start_dispatcher(mx_port=mx.port, command_timeout_s=60.0, max_concurrency=16)
    for n in range(30):
        await submit([f"u{n}@{stalled}"], PLAIN)
    for n in range(5):
        await submit([f"u{n}@{healthy}"], PLAIN)

    await eventually(lambda: len(events.of("delivered")) == 5, timeout=30)
    assert {e.recipient.split("@")[1] for e in events.of("delivered")} == {healthy}
