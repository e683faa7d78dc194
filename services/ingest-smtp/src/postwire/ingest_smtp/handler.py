"""The aiosmtpd handler: relay policy, envelope and DSN checks, send options, and the accept-means-durable
DATA step.

aiosmtpd finds hooks by name (``dir(handler)``, prefix ``handle_``): a misspelled hook is silently never
called. tests/test_ingest_unit.py checks every ``handle_*`` here against the hooks aiosmtpd calls.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException

from postwire.core.from_header import header_from_domains
from postwire.core.ids import new_message_id
from postwire.core.intake import Intake, QueueUnavailable, Submission
from postwire.core.sendoptions import OptionHeaders, take_option_headers
from postwire.db.accounts import LoginDefaults
from postwire.db.sender_domains import PolicyUnavailable
from postwire.ingest_smtp import metrics, replies
from postwire.ingest_smtp.addresses import address_problem
from postwire.ingest_smtp.auth import Authenticated
from postwire.ingest_smtp.dsn_params import DsnParamError, mail_dsn, rcpt_dsn
from postwire.ingest_smtp.message import extract_subject, header_block_too_big, received_header
from postwire.ingest_smtp.settings import Network
from postwire.v1.envelope_pb2 import Dsn, RecipientDsn

log = structlog.get_logger(__name__)

AUTH_REQUIRED = "530 5.7.0 Authentication required"
QUEUE_UNAVAILABLE = "451 4.3.0 Queue unavailable, try again later"
TEMPORARY_ERROR = "451 4.3.0 Temporary local error, try again later"
SHUTTING_DOWN = "451 4.3.2 Service shutting down, try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
NESTED_AUTH = "503 5.5.1 AUTH not permitted during a mail transaction"
# aiosmtpd hands ``MAIL FROM:<>`` (the null reverse-path, RFC 5321 4.5.5) to the hook as the address "<>".
# It stays "<>" in the envelope, because aiosmtpd tests mail_from for truth (nested MAIL, RCPT before
# MAIL); the queued message gets "".
NULL_SENDER = "<>"

# the first of a message's From domains its account may not send as, or None (FromPolicies.unverified);
# raises PolicyUnavailable
UnverifiedFrom = Callable[[str, list[str]], Awaitable[str | None]]


def peer_ip(session: Session) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP (an IPv4-mapped IPv6 peer counts as its IPv4 address)."""
    try:
        return _ip(session.peer[0]) if session.peer else None
    except (TypeError, IndexError):
        return None


@functools.lru_cache(maxsize=4096)
def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parsed once per client address, not on every check of every session (ipaddress is slow)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class Submitter:
    """Whom a session submits for, and the switches its messages start from."""

    account_id: str
    authenticated: bool
    defaults: LoginDefaults = field(default_factory=LoginDefaults)
    default_stream: str | None = None  # the login's lane for messages that name none (postwire.core.lanes)


class SubmissionEnvelope(Envelope):
    """aiosmtpd's envelope plus the RFC 3461 parameters (SubmissionSMTP creates these)."""

    def __init__(self) -> None:
        super().__init__()
        self.dsn: Dsn | None = None
        self.recipient_dsn: dict[str, RecipientDsn] = {}


def dsn_state(envelope: Envelope) -> SubmissionEnvelope:
    if not isinstance(envelope, SubmissionEnvelope):
        raise TypeError("SubmissionHandler needs SubmissionSMTP, whose envelopes carry DSN parameters")
    return envelope


@dataclass(frozen=True)
class RelayPolicy:
    """Who may submit: an authenticated client as its own account, or a trusted-network client as the
    trusted account (Postfix's permit_mynetworks). Everyone else is refused at RCPT: no open relay."""

    trusted_networks: tuple[Network, ...] = ()
    trusted_account_id: str | None = None

    def account_for(self, session: Session) -> Submitter | None:
        """Whom this session submits for (a login's own switches, or the standard ones for trusted-network
        mail), or None when it may not relay."""
        if session.authenticated and isinstance(session.auth_data, Authenticated):
            auth = session.auth_data
            return Submitter(auth.account_id, True, auth.defaults, auth.default_stream)
        ip = peer_ip(session)
        if self.trusted_account_id and ip is not None and any(ip in net for net in self.trusted_networks):
            return Submitter(self.trusted_account_id, False)
        return None


def tls_info(session: Session) -> tuple[str, str] | None:
    """(protocol version, cipher) of a STARTTLS session, for the Received header."""
    ssl_object = (session.ssl or {}).get("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return str(ssl_object.version()), str(cipher[0]) if cipher else "unknown"


class SubmissionHandler:
    def __init__(self, *, intake: Intake, policy: RelayPolicy, hostname: str, max_recipients: int,
                 queue_connected: Callable[[], bool], max_header_size: int = 256 * 1024,
                 unverified_from: UnverifiedFrom | None = None) -> None:
        self._intake = intake
        self._unverified_from = unverified_from
        self._policy = policy
        self._hostname = hostname
        self._max_recipients = max_recipients
        self._max_header_size = max_header_size
        self._queue_connected = queue_connected
        self.closing = False

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """Advertise ENHANCEDSTATUSCODES (RFC 2034), since our replies carry them, and DSN (RFC 3461). With
        this hook aiosmtpd no longer records the EHLO name itself; without the assignment every MAIL would
        get 503."""
        session.host_name = hostname
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", "250-DSN", responses[-1]]

    async def handle_AUTH(self, server: SMTP, session: Session, envelope: Envelope, args: list[str]) -> Any:
        """RFC 4954 4: AUTH is not permitted inside a transaction (the account would change mid-way)."""
        return NESTED_AUTH if envelope.mail_from else MISSING

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        """MAIL is allowed before AUTH (clients send it early); relaying is decided at RCPT. ``MAIL
        FROM:<>`` is accepted. ``mail_options`` holds RET and ENVID as the client sent them."""
        if self.closing:
            metrics.rejected("shutting_down")
            return SHUTTING_DOWN
        problem = None if address == NULL_SENDER else address_problem(address)
        if problem is not None:
            metrics.rejected("bad_sender")
            return f"553 5.1.7 Bad sender address <{address}>: {problem}"
        try:
            dsn = mail_dsn(mail_options)
        except DsnParamError as e:
            metrics.rejected("bad_parameter")
            return f"501 5.5.4 {e}"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        dsn_state(envelope).dsn = dsn
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self._policy.account_for(session) is None:
            metrics.rejected("auth_required")
            return AUTH_REQUIRED
        problem = address_problem(address)
        if problem is not None:
            metrics.rejected("bad_recipient")
            return f"553 5.1.3 Bad recipient address <{address}>: {problem}"
        try:
            rdsn = rcpt_dsn(rcpt_options)
        except DsnParamError as e:
            metrics.rejected("bad_parameter")
            return f"501 5.5.4 {e}"
        if address in envelope.rcpt_tos:
            return "250 2.1.5 Ok"  # a duplicate RCPT is one delivery, not two (its first parameters hold)
        if len(envelope.rcpt_tos) >= self._max_recipients:
            metrics.rejected("too_many_recipients")
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if rdsn is not None:
            dsn_state(envelope).recipient_dsn[address] = rdsn
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Queue the message; 250 only after JetStream confirmed it, otherwise 451 (the client retries).

        The message's option headers (x-smtpeter-* / X-Postwire-*) override the session's switches and
        are removed before the message is stored; our Received: header goes on top of what remains."""
        who = self._policy.account_for(session)
        if who is None:  # unreachable through RCPT, kept so DATA can never skip the relay check
            metrics.rejected("auth_required")
            return AUTH_REQUIRED
        raw = envelope.original_content or b""
        if header_block_too_big(raw, self._max_header_size):
            metrics.rejected("header_too_big")
            return replies.header_too_big(self._max_header_size)
        if not self._queue_connected():
            # refuse up front, before reading options or storing a body: the connection buffers nothing
            # while reconnecting (pending_size=0, postwire.core.natsconn), so the publish would fail anyway
            metrics.rejected("queue_unavailable")
            return QUEUE_UNAVAILABLE
        started = asyncio.get_running_loop().time()
        message_id = new_message_id()
        content, headers = take_option_headers(raw)
        for problem in headers.problems:  # an unreadable value: the default holds, the sender is not refused
            log.info("smtp.option_header_ignored", message_id=message_id, problem=problem)
        refusal = await self._from_refusal(who.account_id, content)
        if refusal is not None:
            return refusal
        submission = self._submission(session, envelope, message_id, content, who, headers)
        try:
            await self._intake.submit(submission, message_id)
        except QueueUnavailable as e:
            log.warning("smtp.queue_unavailable", message_id=message_id, error=str(e))
            metrics.rejected("queue_unavailable")
            return QUEUE_UNAVAILABLE
        metrics.ACCEPT_SECONDS.observe(asyncio.get_running_loop().time() - started)
        metrics.ACCEPTED.inc()
        metrics.RECEIVED_BYTES.inc(len(raw))
        log.debug("smtp.accepted", message_id=message_id, account_id=who.account_id,
                 recipients=len(envelope.rcpt_tos), size=len(raw))
        return replies.QUEUED_PREFIX + message_id

    async def _from_refusal(self, account_id: str, content: bytes) -> str | None:
        """550 5.7.1 for mail From a domain the account has not verified (docs/domains.md); 451 while
        the database cannot say which it has."""
        if self._unverified_from is None:
            return None
        try:
            domain = await self._unverified_from(account_id, header_from_domains(content))
        except PolicyUnavailable:
            metrics.rejected("policy_unavailable")
            return TEMPORARY_ERROR
        if domain is None:
            return None
        metrics.rejected("unverified_from")
        return replies.unverified_from(domain)

    def _submission(self, session: Session, envelope: Envelope, message_id: str, content: bytes,
                    who: Submitter, headers: OptionHeaders) -> Submission:
        ip = peer_ip(session)
        literal = "unknown" if ip is None else f"IPv6:{ip}" if ip.version == 6 else str(ip)  # RFC 5321 4.1.3
        trace = received_header(
            helo=session.host_name, peer_ip=literal, hostname=self._hostname,
            message_id=message_id, esmtp=session.extended_smtp, tls=tls_info(session),
            account_id=who.account_id, authenticated=who.authenticated, recipients=envelope.rcpt_tos,
        )
        switches = {**who.defaults.as_dict(), **headers.switches}
        state = dsn_state(envelope)
        mail_from = envelope.mail_from or ""
        return Submission(
            account_id=who.account_id, mail_from="" if mail_from == NULL_SENDER else mail_from,
            recipients=list(envelope.rcpt_tos), raw=trace + content, source="smtp",
            subject=extract_subject(content), tags=headers.tags,
            inline_css=switches["inline_css"], track_clicks=switches["track_clicks"],
            track_opens=switches["track_opens"], track_bounces=switches["track_bounces"],
            prevent_scam=switches["prevent_scam"], dsn=state.dsn, recipient_dsn=dict(state.recipient_dsn),
            stream=headers.stream or who.default_stream, unsubscribe=bool(headers.unsubscribe),
        )

    async def handle_exception(self, error: Exception) -> str:
        """A temporary failure without the exception text (aiosmtpd's default is a permanent 500 that
        leaks it): the client keeps the message and retries. A failed STARTTLS handshake (an old TLS
        version, a client that gave up) is the client's problem, not ours: aiosmtpd closes the connection
        without a reply."""
        if isinstance(error, TLSSetupException):
            log.info("smtp.tls_failed", error=str(error.__cause__))
            metrics.rejected("tls_failed")
            return TEMPORARY_ERROR  # not sent: aiosmtpd closes instead
        log.error("smtp.exception", exc_info=error)
        metrics.rejected("error")
        return TEMPORARY_ERROR
