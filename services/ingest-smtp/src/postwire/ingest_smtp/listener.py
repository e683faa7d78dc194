"""The listening socket of one submission port and the connections it owns, for metrics and graceful
shutdown. Served with ``loop.create_server`` on the service's own loop (not aiosmtpd's threaded
Controller, whose loop is not the NATS client's, and which cannot bind port 0)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import structlog

from postwire.ingest_smtp import metrics
from postwire.ingest_smtp.auth import LoginVerifier
from postwire.ingest_smtp.handler import SubmissionHandler
from postwire.ingest_smtp.limits import ClientLimits
from postwire.ingest_smtp.server import SessionRules, SubmissionSMTP

log = structlog.get_logger(__name__)


class Connections:
    """The live connections of one listener, and a signal each time one may have finished a transaction."""

    def __init__(self) -> None:
        self._live: set[SubmissionSMTP] = set()
        self._changed = asyncio.Event()

    def __iter__(self) -> Iterator[SubmissionSMTP]:
        return iter(list(self._live))

    def __len__(self) -> int:
        return len(self._live)

    def add(self, conn: SubmissionSMTP) -> None:
        self._live.add(conn)
        metrics.CONNECTIONS.inc()
        metrics.CONNECTIONS_ACTIVE.inc()

    def discard(self, conn: SubmissionSMTP) -> None:
        if conn in self._live:
            self._live.remove(conn)
            metrics.CONNECTIONS_ACTIVE.dec()
            self.changed()

    def changed(self) -> None:
        self._changed.set()

    def busy(self) -> int:
        return sum(c.in_transaction for c in self._live)

    async def wait_idle(self, timeout_s: float) -> int:
        """Wait until no connection is inside a transaction, at most ``timeout_s``; the number still busy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.busy() and (remaining := deadline - loop.time()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self.busy()


class SmtpListener:
    """The listening socket plus every live connection, so shutdown can let transactions finish."""

    def __init__(self, server: asyncio.Server, handler: SubmissionHandler, connections: Connections) -> None:
        self._server = server
        self._handler = handler
        self.connections = connections

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, refuse new transactions, wait up to ``grace_s`` for open ones (a client mid-DATA
        or waiting for its PubAck), then close every connection with 421. A transaction cut off here was
        never answered 250, so its client still holds the message and retries."""
        self._handler.closing = True
        self._server.close()
        busy = await self.connections.wait_idle(grace_s)
        if busy:
            log.warning("smtp.shutdown_cut_transactions", count=busy)
        for conn in self.connections:
            conn.close_for_shutdown()
        await self._server.wait_closed()


async def start_listener(*, host: str, port: int, handler: SubmissionHandler, verifier: LoginVerifier,
                         tls_context: ssl.SSLContext, hostname: str, max_message_size: int,
                         allow_insecure_auth: bool, timeout_s: float, limits: ClientLimits,
                         rules: SessionRules, implicit_tls: bool = False) -> SmtpListener:
    """Bind ``host:port`` (0 picks a free port) and serve submission on the running loop: STARTTLS
    offered, or with ``implicit_tls`` TLS from the first byte (port 465), where AUTH is always allowed
    and STARTTLS is not offered (the session is encrypted already)."""
    loop = asyncio.get_running_loop()
    connections = Connections()

    def factory() -> SubmissionSMTP:
        return SubmissionSMTP(
            handler, verifier=verifier, connections=connections, limits=limits, rules=rules,
            implicit_tls=implicit_tls, loop=loop,
            hostname=hostname, ident="Postwire ESMTP", data_size_limit=max_message_size,
            tls_context=None if implicit_tls else tls_context,
            auth_require_tls=not (allow_insecure_auth or implicit_tls), timeout=timeout_s,
        )

    server = await loop.create_server(factory, host, port, ssl=tls_context if implicit_tls else None)
    return SmtpListener(server, handler, connections)
