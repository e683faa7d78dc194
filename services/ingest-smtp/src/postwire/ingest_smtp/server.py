"""aiosmtpd's SMTP protocol adapted for submission, and hardened against hostile clients.

What it adds to aiosmtpd 1.4: asynchronous AUTH checks with brute-force lockout, DSN parameters passed
through, enhanced status codes, per-IP connection limits at the greeting, early-talker and pipelining
checks, a session error limit, a 421 on command and DATA timeouts, and its own DATA reader (data.py:
bare CR/LF refused, memory bounded by the size limit). listener.py serves it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AnyStr, NoReturn

import structlog
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from postwire.ingest_smtp import dsn_params, metrics, replies
from postwire.ingest_smtp.auth import Authenticated, AuthUnavailable, LoginVerifier
from postwire.ingest_smtp.data import read_data
from postwire.ingest_smtp.handler import SubmissionEnvelope, SubmissionHandler, peer_ip
from postwire.ingest_smtp.limits import ClientLimits
from postwire.ingest_smtp.protocol_init import init_protocol

if TYPE_CHECKING:
    from postwire.ingest_smtp.listener import Connections

log = structlog.get_logger(__name__)

Command = Callable[[str | None], Awaitable[None]]
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
# <local@domain> then parameters; no "(" after it, since the parser would read a comment there
_SIMPLE_PATH = re.compile(rf"[ \t]*<({_DOT_ATOM}@{_DOT_ATOM})>([^(]*)\Z")


@dataclass(frozen=True)
class SessionRules:
    """Limits of one session (settings.py explains each)."""

    data_timeout_s: float = 600.0
    max_errors: int = 20
    greet_pause_s: float = 0.0


def capture_credentials(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                        auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator callable. aiosmtpd 1.4 calls it synchronously, so it cannot await the
    database: it only hands the decoded credentials back, and SubmissionSMTP verifies them afterwards."""
    return AuthResult(success=False, handled=False, auth_data=auth_data)


class CommandTable(Mapping[str, Any]):
    """aiosmtpd's table of smtp_* methods, which it reads with ``.get(command)``. An unknown command gets
    our handler instead of None, so the reply and the error limit are ours (aiosmtpd hard-codes "502 Too
    many unrecognized commands" after five)."""

    def __init__(self, known: Mapping[str, Any], unknown: Callable[[str], Command]) -> None:
        self._known = known
        self._unknown = unknown

    def __getitem__(self, command: str) -> Any:
        return self._known[command]

    def __iter__(self) -> Iterator[str]:
        return iter(self._known)

    def __len__(self) -> int:
        return len(self._known)

    def get(self, command: str, default: Any = None) -> Any:
        found = self._known.get(command)
        return found if found is not None else self._unknown(command)


class SubmissionSMTP(SMTP):
    """One submission session (aiosmtpd creates one protocol instance per connection)."""

    def __init__(self, handler: SubmissionHandler, *, verifier: LoginVerifier, connections: Connections,
                 limits: ClientLimits, rules: SessionRules, loop: asyncio.AbstractEventLoop, hostname: str,
                 ident: str, data_size_limit: int | None, tls_context: ssl.SSLContext | None,
                 auth_require_tls: bool, timeout: float, implicit_tls: bool = False) -> None:
        # not super().__init__: aiosmtpd's introspects the classes on every connection (protocol_init.py)
        init_protocol(self, handler, loop=loop, hostname=hostname, ident=ident,
                      data_size_limit=data_size_limit, tls_context=tls_context,
                      auth_require_tls=auth_require_tls, timeout=timeout, authenticator=capture_credentials)
        self._verifier = verifier
        self._connections = connections
        self._limits = limits
        self._rules = rules
        self._implicit_tls = implicit_tls
        self._dsn_params: list[str] = []
        self._counted = False  # counted as open by the connection limits
        self._errors = 0
        self._receiving_data = False
        # aiosmtpd keeps these limits in one dict shared by every connection (and grows MAIL's on each
        # EHLO); ours are per connection, with RFC 3461's extra room for the DSN parameters
        base = self.command_size_limit
        self.command_size_limits = collections.defaultdict(
            lambda: base, {"MAIL": base + dsn_params.MAIL_EXTRA, "RCPT": base + dsn_params.RCPT_EXTRA})
        self._smtp_methods = CommandTable(self._smtp_methods, self._unknown_command)  # type: ignore[assignment]  # read with .get, .items

    def _create_envelope(self) -> SubmissionEnvelope:
        return SubmissionEnvelope()

    # --- the greeting: connection limits and early talkers -----------------------------------------------

    async def _handle_client(self) -> None:
        refusal = await self._admit() or await self._early_talker()
        if refusal is not None:
            reply, reason = refusal
            metrics.rejected(reason)
            assert self.session is not None
            log.info("smtp.connection_refused", reason=reason, peer=str(peer_ip(self.session)))
            self._close_with(reply)
            return
        await super()._handle_client()

    async def _admit(self) -> tuple[str, str] | None:
        """The per-IP connection limits (shared by the replicas: the first connection of a client after
        a pause may wait for one NATS round trip); the reply instead of 220 when over one."""
        assert self.session is not None
        ip = peer_ip(self.session)
        why = await self._limits.connections.admit(ip)
        if why is not None:
            return replies.over_connection_limit(why, ip), why
        self._counted = True  # no await since admit: connection_lost releases exactly what was counted
        return None

    async def _early_talker(self) -> tuple[str, str] | None:
        """A client that sends before our 220 ignores the protocol (spam bots and pipelining abusers do);
        the optional greet pause gives it time to show itself. Any input here is a sure sign: nothing
        conforming can have been sent yet."""
        assert self.session is not None
        if self._rules.greet_pause_s and peer_ip(self.session) not in self._limits.exempt:
            await asyncio.sleep(self._rules.greet_pause_s)
        return (replies.SYNC_ERROR, "early_talker") if self._pending_input() else None

    def _pending_input(self) -> bool:
        """Bytes received and not read yet."""
        return bool(getattr(self._reader, "_buffer", b""))

    # --- MAIL/RCPT paths: the usual <local@domain> without the email package's header parser -------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd parses every path with the email package's RFC 5322 parser (a tenth of a session's
        CPU); a plain ``<dot-atom@dot-atom>`` gives the same answer from one regular expression, and
        anything else (quoted local parts, comments, source routes, ``<>``) still goes to aiosmtpd."""
        found = _SIMPLE_PATH.match(arg) if arg else None
        if found is None:
            return super()._getaddr(arg)
        address = found.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, found.group(2).lstrip(" \t")

    # --- DSN (RFC 3461): parameters aiosmtpd does not know, kept as sent for the handler ---------------

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._with_dsn_params(arg, "FROM:", dsn_params.MAIL_KEYWORDS, super().smtp_MAIL)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._with_dsn_params(arg, "TO:", dsn_params.RCPT_KEYWORDS, super().smtp_RCPT)

    async def _with_dsn_params(self, arg: str | None, keyword: str, ours: frozenset[str],
                               command: Command) -> None:
        """aiosmtpd answers 555 to any parameter it does not know and upper-cases the others (ENVID and
        ORCPT are case-sensitive): let it parse the command without the DSN parameters, and pass those on
        to the handler hook unchanged (see _call_handler_hook). Only after EHLO: HELO allows none."""
        if arg is not None and self.session is not None and self.session.extended_smtp:
            arg, self._dsn_params = dsn_params.split_params(arg, keyword, ours, self._getaddr)
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

    # --- DATA: our reader (data.py), its own timeout, no content before 354 -----------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if self._pending_input():
            # content sent before our 354 (RFC 2920 3.1: DATA ends a pipelined group). Whether DATA would
            # be accepted or not, that input must become neither a message nor commands
            self._hang_up(replies.SYNC_ERROR, "pipelining")
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push(replies.NEED_RCPT)
            return
        if arg:
            await self.push(replies.DATA_SYNTAX)
            return
        self._receiving_data = True
        self._reset_timeout(self._rules.data_timeout_s)
        try:
            await self.push(replies.START_DATA)
            received = await read_data(self._reader, self.data_size_limit)
        finally:
            self._receiving_data = False
        self._reset_timeout()  # waiting for the PubAck is not the client's time
        if received.refusal is not None:
            reply, reason = received.refusal
            metrics.rejected(reason)
            log.info("smtp.data_refused", reason=reason, peer=str(peer_ip(self.session)))
            self.envelope = self._create_envelope()
            await self.push(reply)
            return
        self.envelope.content = self.envelope.original_content = received.content
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()
        await self.push("250 OK" if status is MISSING else status)

    # --- AUTH: aiosmtpd parses PLAIN/LOGIN, we verify without blocking the loop -------------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify("PLAIN", await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify("LOGIN", await super().auth_LOGIN(_, args))

    async def _verify(self, mechanism: str, parsed: AuthResult) -> AuthResult:
        """Turn captured credentials into success, 535 (handled=False makes aiosmtpd reply; the default
        handled=True would leave the client waiting), 454 when the credential store is down, or 454
        without a check while the client's IP or the username is locked out (limits.AuthLimits)."""
        creds = parsed.auth_data
        if not isinstance(creds, LoginPassword):
            return parsed  # aiosmtpd already answered (bad base64, '*' abort, ...)
        assert self.session is not None
        ip = peer_ip(self.session)
        try:
            username: str | None = creds.login.decode()
        except UnicodeDecodeError:
            username = None
        if self._limits.auth.locked(ip, username):
            log.info("smtp.auth_locked", mechanism=mechanism, username=username, peer=str(ip))
            metrics.AUTH.labels(mechanism, "locked").inc()
            metrics.rejected("auth_locked")
            return AuthResult(success=False, handled=False, message=replies.AUTH_LOCKED)
        try:
            password = creds.password.decode()
            login = None if username is None else await self._verifier.verify(username, password)
        except UnicodeDecodeError:
            login = None
        except AuthUnavailable as e:
            log.warning("smtp.auth_unavailable", error=str(e))
            metrics.AUTH.labels(mechanism, "tempfail").inc()
            return AuthResult(success=False, handled=False, message=replies.AUTH_TEMPFAIL)
        if login is None:
            locked = await self._limits.auth.failed(ip, username)
            log.info("smtp.auth_failed", mechanism=mechanism, username=username or "<not utf-8>",
                     peer=str(ip), locked_out=locked)
            metrics.AUTH.labels(mechanism, "failure").inc()
            return AuthResult(success=False, handled=False)
        metrics.AUTH.labels(mechanism, "success").inc()
        return AuthResult(success=True, auth_data=Authenticated.of(login))

    # --- replies, unknown commands and the error limit ----------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        """Send a reply, swapping aiosmtpd's stock texts for ones with enhanced codes, and hang up with 421
        once the session collected ``max_errors`` 4xx/5xx replies without an accepted message.

        Every end of a transaction (DATA answered, RSET, EHLO, aborted DATA) is followed by a reply, so
        this is also where a draining listener learns that a connection became idle.
        """
        if isinstance(status, bytes):  # AUTH challenges
            await super().push(status)
            return
        reply = status
        if status in replies.REPLY_REWRITES:
            reply, reason = replies.REPLY_REWRITES[status]
            if reason is not None:
                metrics.rejected(reason)
        await super().push(reply)
        if not self.in_transaction:
            self._connections.changed()
        self._count_errors(reply)

    def _count_errors(self, reply: str) -> None:
        if reply.startswith(replies.QUEUED_PREFIX):
            self._errors = 0
        elif reply[:1] in ("4", "5") and not reply.startswith("421"):
            self._errors += 1
            if self._rules.max_errors and self._errors >= self._rules.max_errors:
                self._hang_up(replies.TOO_MANY_ERRORS, "too_many_errors")

    def _unknown_command(self, command: str) -> Command:
        async def refuse(arg: str | None) -> None:
            metrics.rejected("unknown_command")
            await self.push(replies.UNKNOWN_COMMAND)

        return refuse

    # --- timeouts -------------------------------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        """aiosmtpd just closes; RFC 5321 4.5.3.2 lets the server say 421 first."""
        phase = "data" if self._receiving_data else "command"
        metrics.rejected("timeout")
        assert self.session is not None
        log.info("smtp.timeout", phase=phase, peer=str(peer_ip(self.session)))
        self._close_with(replies.DATA_TIMEOUT if self._receiving_data else replies.COMMAND_TIMEOUT)

    # --- connection tracking, for limits, metrics and graceful shutdown -----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None  # False on the second call, after STARTTLS
        super().connection_made(transport)
        assert self.session is not None
        if first:
            self._connections.add(self)
        if self._implicit_tls:
            # TLS from the first byte (port 465, RFC 8314): record it like a STARTTLS session, so the
            # Received header names the protocol and cipher
            self.session.ssl = {"ssl_object": transport.get_extra_info("ssl_object")}

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        if self._counted and self.session is not None:
            self._counted = False
            self._limits.connections.release(peer_ip(self.session))
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        """Between an accepted MAIL and the end of DATA (including the wait for the PubAck)."""
        return self.envelope is not None and bool(self.envelope.mail_from)

    def close_for_shutdown(self) -> None:
        """Say 421 (RFC 5321 3.8) and hang up; any unanswered transaction stays with the client."""
        self._close_with(replies.SHUTDOWN)

    def _close_with(self, reply: str) -> None:
        """Write a last reply and close (connection_lost then stops the session's task)."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(reply.encode("ascii") + b"\r\n")
            transport.close()

    def _hang_up(self, reply: str, reason: str) -> NoReturn:
        """From inside the session's task: refuse, close, and stop reading at once, so input the client
        already sent is never processed."""
        metrics.rejected(reason)
        assert self.session is not None
        log.info("smtp.hang_up", reason=reason, peer=str(peer_ip(self.session)))
        self._close_with(reply)
        raise asyncio.CancelledError


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
