"""aiosmtpd's SMTP protocol adapted for submission, and the listener that owns its connections.

Served with ``loop.create_server`` on the service's own loop (not aiosmtpd's threaded Controller, whose
loop is not the NATS client's, and which cannot bind port 0).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, AnyStr

import structlog
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from postwire.ingest_smtp import dsn, metrics
from postwire.ingest_smtp.auth import Authenticated, AuthUnavailable, LoginVerifier
from postwire.ingest_smtp.handler import SubmissionEnvelope, SubmissionHandler, peer_ip

log = structlog.get_logger(__name__)

AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure, try again later"
SHUTDOWN_REPLY = b"421 4.3.2 Service shutting down, closing connection\r\n"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"

# aiosmtpd 1.4's stock replies that lack an enhanced status code (RFC 3463), and what we send instead,
# with the reject reason to count. A unit test checks each key still occurs in aiosmtpd's source.
REPLY_REWRITES: dict[str, tuple[str, str | None]] = {
    "552 Error: message size exceeds fixed maximum message size": (TOO_BIG, "too_big"),
    "552 Error: Too much mail data": (TOO_BIG, "too_big"),
    "500 Line too long (see RFC5321 4.5.3.1.6)":
        ("500 5.5.2 Line too long (RFC 5321 4.5.3.1.6 allows 998 characters)", "line_too_long"),
    "503 Error: need MAIL command": ("503 5.5.1 Error: need MAIL command", None),
    "503 Error: need RCPT command": ("503 5.5.1 Error: need RCPT command", None),
    "555 MAIL FROM parameters not recognized or not implemented":
        ("555 5.5.4 MAIL FROM parameters not recognized or not implemented", "bad_parameter"),
    "555 RCPT TO parameters not recognized or not implemented":
        ("555 5.5.4 RCPT TO parameters not recognized or not implemented", "bad_parameter"),
}


def capture_credentials(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                        auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator callable. aiosmtpd 1.4 calls it synchronously, so it cannot await the
    database: it only hands the decoded credentials back, and SubmissionSMTP verifies them afterwards."""
    return AuthResult(success=False, handled=False, auth_data=auth_data)


class SubmissionSMTP(SMTP):
    """SMTP with asynchronous credential checks, DSN parameters, enhanced status codes and connection
    tracking."""

    def __init__(self, handler: SubmissionHandler, *, verifier: LoginVerifier, connections: Connections,
                 implicit_tls: bool = False, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=capture_credentials, **kwargs)
        self._verifier = verifier
        self._connections = connections
        self._implicit_tls = implicit_tls
        self._dsn_params: list[str] = []
        # aiosmtpd keeps these limits in one dict shared by every connection (and grows MAIL's on each
        # EHLO); ours are per connection, with RFC 3461's extra room for the DSN parameters
        base = self.command_size_limit
        self.command_size_limits = collections.defaultdict(
            lambda: base, {"MAIL": base + dsn.MAIL_EXTRA, "RCPT": base + dsn.RCPT_EXTRA})

    def _create_envelope(self) -> SubmissionEnvelope:
        return SubmissionEnvelope()

    # --- DSN (RFC 3461): parameters aiosmtpd does not know, kept as sent for the handler ---------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._with_dsn_params(arg, "FROM:", dsn.MAIL_KEYWORDS, super().smtp_MAIL)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._with_dsn_params(arg, "TO:", dsn.RCPT_KEYWORDS, super().smtp_RCPT)

    async def _with_dsn_params(self, arg: str | None, keyword: str, ours: frozenset[str],
                               command: Callable[[str | None], Awaitable[None]]) -> None:
        """aiosmtpd answers 555 to any parameter it does not know and upper-cases the others (ENVID and
        ORCPT are case-sensitive): let it parse the command without the DSN parameters, and pass those on
        to the handler hook unchanged (see _call_handler_hook). Only after EHLO: HELO allows none."""
        if arg is not None and self.session is not None and self.session.extended_smtp:
            arg, self._dsn_params = dsn.split_params(arg, keyword, ours, self._getaddr)
        try:
            await command(arg)
        finally:
            self._dsn_params = []

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """MAIL and RCPT hooks get their DSN parameters appended to the options aiosmtpd parsed."""
        if command in ("MAIL", "RCPT") and self._dsn_params:
            *leading, options = args
            args = (*leading, [*options, *self._dsn_params])
        return await super()._call_handler_hook(command, *args)

    # --- AUTH: aiosmtpd parses PLAIN/LOGIN, we verify without blocking the loop -------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify("LOGIN", await super().auth_LOGIN(_, args))

    async def _verify(self, mechanism: str, parsed: AuthResult) -> AuthResult:
        """Turn captured credentials into success, 535 (handled=False makes aiosmtpd reply; the default
        handled=True would leave the client waiting) or 454 when the credential store is down."""
        creds = parsed.auth_data
        if not isinstance(creds, LoginPassword):
            return parsed  # aiosmtpd already answered (bad base64, '*' abort, ...)
        try:
            username, password = creds.login.decode(), creds.password.decode()
            login = await self._verifier.verify(username, password)
        except UnicodeDecodeError:
            username, login = "<not utf-8>", None
        except AuthUnavailable as e:
            log.warning("smtp.auth_unavailable", error=str(e))
            metrics.AUTH.labels(mechanism, "tempfail").inc()
            return AuthResult(success=False, handled=False, message=AUTH_TEMPFAIL)
        if login is None:
            assert self.session is not None
            log.info("smtp.auth_failed", mechanism=mechanism, username=username,
                     peer=str(peer_ip(self.session)))
            metrics.AUTH.labels(mechanism, "failure").inc()
            return AuthResult(success=False, handled=False)
        metrics.AUTH.labels(mechanism, "success").inc()
        return AuthResult(success=True, auth_data=Authenticated.of(login))

    # --- replies ----------------------------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        """Send a reply, swapping aiosmtpd's code-only stock texts for ones with enhanced codes.

        Every end of a transaction (DATA answered, RSET, EHLO, aborted DATA) is followed by a reply, so
        this is also where a draining listener learns that a connection became idle.
        """
        if isinstance(status, str) and status in REPLY_REWRITES:
            reply, reason = REPLY_REWRITES[status]
            if reason is not None:
                metrics.rejected(reason)
            await super().push(reply)
        else:
            await super().push(status)
        if not self.in_transaction:
            self._connections.changed()

    # --- connection tracking, for metrics and graceful shutdown -----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None  # False on the second call, after STARTTLS
        super().connection_made(transport)
        if first:
            self._connections.add(self)
        if self._implicit_tls and self.session is not None:
            # TLS from the first byte (port 465, RFC 8314): record it like a STARTTLS session, so the
            # Received header names the protocol and cipher
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        """Between an accepted MAIL and the end of DATA (including the wait for the PubAck)."""
        return self.envelope is not None and bool(self.envelope.mail_from)

    def close_for_shutdown(self) -> None:
        """Say 421 (RFC 5321 3.8) and hang up; any unanswered transaction stays with the client."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(SHUTDOWN_REPLY)
            transport.close()


def quiet_aiosmtpd_log() -> None:
    """aiosmtpd logs every command (senders, recipients) at INFO on "mail.log", and warns about its own
    deprecated login_data on each AUTH. Our own events cover what matters; keep its warnings and errors."""
    logger = logging.getLogger("mail.log")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropLoginDataWarning) for f in logger.filters):
        logger.addFilter(_DropLoginDataWarning())


class _DropLoginDataWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in str(record.msg)


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
                         allow_insecure_auth: bool, timeout_s: float,
                         implicit_tls: bool = False) -> SmtpListener:
    """Bind ``host:port`` (0 picks a free port) and serve submission on the running loop: STARTTLS
    offered, or with ``implicit_tls`` TLS from the first byte (port 465), where AUTH is always allowed
    and STARTTLS is not offered (the session is encrypted already)."""
    loop = asyncio.get_running_loop()
    connections = Connections()

    def factory() -> SubmissionSMTP:
        return SubmissionSMTP(
            handler, verifier=verifier, connections=connections, implicit_tls=implicit_tls, loop=loop,
            hostname=hostname, ident="Postwire ESMTP", data_size_limit=max_message_size, decode_data=False,
            tls_context=None if implicit_tls else tls_context,
            auth_require_tls=not (allow_insecure_auth or implicit_tls), timeout=timeout_s,
        )

    server = await loop.create_server(factory, host, port, ssl=tls_context if implicit_tls else None)
    return SmtpListener(server, handler, connections)
