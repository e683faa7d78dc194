"""A real SMTP destination on loopback (aiosmtpd) that stores what it receives and can be told to
answer with temporary or permanent failures, so delivery, retries and rejections are tested for real."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = field(default_factory=time.monotonic)

    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class SinkHandler:
    """aiosmtpd handler; ``script(rcpt, replies)`` makes the next RCPTs for ``rcpt`` get those replies."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.rcpt_replies: dict[str, deque[str]] = defaultdict(deque)
        self.rcpt_attempts: dict[str, int] = defaultdict(int)
        # domain -> seconds to stall before answering DATA: a slow destination
        self.data_delay: dict[str, float] = {}
        self.arrived = asyncio.Condition()
        self.pipelining = False

    def script(self, rcpt: str, *replies: str) -> None:
        self.rcpt_replies[rcpt.lower()].extend(replies)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        self.rcpt_attempts[address.lower()] += 1
        queue = self.rcpt_replies.get(address.lower())
        if queue:
            return queue.popleft()
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        delays = [self.data_delay.get(r.rpartition("@")[2].lower(), 0.0) for r in envelope.rcpt_tos]
        if delays and max(delays) > 0:
            await asyncio.sleep(max(delays))
        async with self.arrived:
            self.received.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos), data))
            self.arrived.notify_all()
        return f"250 2.0.0 Ok: queued as sink-{len(self.received)}"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """aiosmtpd reads pipelined commands one after the other but does not say so; a sink that
        offers PIPELINING (RFC 2920) gets MAIL, RCPT and DATA in one write."""
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    def for_rcpt(self, rcpt: str) -> list[Received]:
        return [r for r in self.received if rcpt.lower() in (a.lower() for a in r.rcpt_tos)]

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until at least ``count`` messages have arrived (a test deadline, not a speed assertion)."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return self.received


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, pipelining: bool = False) -> None:
        self.host, self.port = host, port
        self.handler = SinkHandler()
        self.handler.pipelining = pipelining
        self.connections = 0
        self.max_connections = 0
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        sink = self

        class CountingSMTP(SMTP):
            def connection_made(self, transport: Any) -> None:
                sink.connections += 1
                sink.max_connections = max(sink.max_connections, sink.connections)
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                sink.connections -= 1
                super().connection_lost(exc)

        return CountingSMTP(self.handler, hostname="sink.test", data_size_limit=64 * 1024 * 1024,
                            decode_data=False)

    async def start(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
