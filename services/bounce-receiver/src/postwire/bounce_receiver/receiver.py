"""The bounce receiver: the SMTP server that is the MX of the bounce domain (docs/bounces.md).

It accepts mail only for VERP return paths whose tag verifies (``postwire.core.verp``) and that name a
message Postwire knows, parses it (``parse_bounce``), and turns it into one event per return path:
``bounced`` (a DSN or a non-standard bounce), ``complained`` (an ARF report), or nothing (an auto-reply,
a human reply, a success or delay notice: logged and counted, never answered, so bounces never bounce).

Accept means durable: the answer to DATA is 250 only after JetStream confirmed every event (451 if NATS
is down, so the remote MTA keeps the bounce and retries). Event ids are derived from the bounce mail
itself, so a DSN re-sent after a lost 250 is stored once.

It is also the address DMARC aggregate reports are mailed to, ``dmarc@<bounce domain>``
(:mod:`postwire.bounce_receiver.dmarc_mail`): such a mail is answered 250 only after its report is
committed to PostgreSQL (451 while it cannot be), and dropped, never bounced, when it is no report or
no account sends from its domain.

Served with ``loop.create_server`` on the service's own loop, like ingest-smtp (not aiosmtpd's threaded
``Controller``, whose loop is not the NATS client's and which cannot bind port 0). aiosmtpd finds hooks by
name, so ``HOOKS`` lists the ones here and a test checks them against what aiosmtpd calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any, AnyStr, Protocol

import nats.errors
import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session
from nats.js import JetStreamContext
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_classifier.parser import BounceResult, parse_bounce
from postwire.bounce_classifier.vocabulary import bounded
from postwire.bounce_receiver import dmarc_mail, metrics
from postwire.core import verp
from postwire.core.events import make_event, publish_event
from postwire.db.models import Message, Recipient
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

HOOKS = ("handle_EHLO", "handle_RCPT", "handle_DATA", "handle_exception")

QUEUE_UNAVAILABLE = "451 4.3.0 Queue unavailable, try again later"
LOOKUP_UNAVAILABLE = "451 4.3.0 Temporary lookup failure, try again later"
TEMPORARY_ERROR = "451 4.3.0 Temporary local error, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
SHUTDOWN_REPLY = b"421 4.3.2 Service shutting down, closing connection\r\n"
NO_AUTH = "502 5.5.1 AUTH not available: this server only accepts bounces"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
# aiosmtpd's stock replies without an enhanced status code, and what we send instead
_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
    "552 Error: Too much mail data": TOO_BIG,
}
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


class LookupUnavailable(Exception):
    """PostgreSQL could not answer: the remote MTA must try again later (451)."""


@dataclass(frozen=True)
class Original:
    """The message and recipient a return path stands for, with what events about it carry."""

    return_path: str
    account_id: str
    message_id: str
    recipient: str
    tags: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()


class Originals(Protocol):
    """Finds the original recipient of a verified return path; raises LookupUnavailable."""

    async def find(self, decoded: verp.DecodedVerp, return_path: str) -> Original | None: ...


class DbOriginals:
    """The ``recipients`` rows of the message (written by the recorder from ``accepted`` events); the one
    whose address hashes to the return path's recipient hash is the bounced recipient."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], timeout_s: float = 5.0) -> None:
        self._sessions, self._timeout_s = sessions, timeout_s

    async def find(self, decoded: verp.DecodedVerp, return_path: str) -> Original | None:
        try:
            rows = await asyncio.wait_for(self._rows(decoded.message_id), self._timeout_s)
        except (OperationalError, DBAPIError, OSError, TimeoutError) as e:
            raise LookupUnavailable(str(e).splitlines()[0] if str(e) else type(e).__name__) from e
        for address, account_id, tags, meta in rows:
            if verp.matches(decoded, address):
                return Original(return_path, account_id, decoded.message_id, address, tuple(tags or ()),
                                tuple(sorted((meta or {}).items())))
        return None

    async def _rows(self, message_id: str) -> Sequence[Any]:
        stmt = (select(Recipient.address, Recipient.account_id, Message.tags, Message.metadata_)
                .outerjoin(Message, Message.id == Recipient.message_id)
                .where(Recipient.message_id == message_id))
        async with self._sessions() as session:
            return (await session.execute(stmt)).all()


def id_age_s(message_id: str, now_ms: int) -> float | None:
    """Age of a Postwire id (its first 10 characters are milliseconds since the epoch), None if it is
    not one of ours."""
    if len(message_id) != 26:
        return None
    value = 0
    for ch in message_id[:10]:
        if ch not in _ID_ALPHABET:
            return None
        value = value * 32 + _ID_ALPHABET.index(ch)
    return (now_ms - value) / 1000.0


class BounceEnvelope(Envelope):
    """aiosmtpd's envelope plus the original recipient found for each accepted return path, and whether
    the DMARC report address is a recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.originals: list[Original] = []
        self.dmarc = False


Publish = Callable[[envelope_pb2.Event], Awaitable[None]]
OnEvent = Callable[[envelope_pb2.Event, bytes], None]


@dataclass
class ReceiverConfig:
    bounce_domain: str
    secret: bytes
    # an unknown message younger than this gets 451 (not recorded yet), older 550
    unknown_grace_s: float = 3600.0


@dataclass
class BounceHandler:
    """The aiosmtpd hooks: RCPT checks the return path, DATA parses and publishes."""

    config: ReceiverConfig
    originals: Originals
    js: JetStreamContext
    queue_connected: Callable[[], bool]
    on_event: OnEvent | None = None  # told of each published event (bounce forwarding)
    reports: dmarc_mail.ReportStore | None = None  # None: dmarc@ is an unknown address like any other
    closing: bool = False
    in_data: int = 0  # transactions between DATA and its answer (publishing)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """Advertise ENHANCEDSTATUSCODES (RFC 2034); aiosmtpd leaves recording the name to this hook."""
        session.host_name = hostname
        return [*responses[:-1], "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.closing:
            return SHUTTING_DOWN
        assert isinstance(envelope, BounceEnvelope)
        if self.reports is not None and dmarc_mail.is_report_address(address, self.config.bounce_domain):
            if not envelope.dmarc:
                envelope.dmarc = True
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(rcpt_options)
            return "250 2.1.5 Ok"
        verdict = await self._check_rcpt(address)
        if isinstance(verdict, str):
            return verdict
        if all(o.return_path != verdict.return_path for o in envelope.originals):
            envelope.originals.append(verdict)
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def _check_rcpt(self, address: str) -> Original | str:
        """The original recipient, or the refusal to answer: 550 5.1.1 for an address that is not a
        return path of ours, 550 5.7.1 for one whose tag does not verify, 451 while lookups fail."""
        local, _, domain = address.strip("<>").rpartition("@")
        try:
            on_domain = verp.normalise_domain(domain) == verp.normalise_domain(self.config.bounce_domain)
        except ValueError:
            on_domain = False
        if not on_domain:
            return self._reject("not_bounce_domain",
                                f"550 5.1.1 <{address}>: Recipient address rejected: this server only "
                                f"accepts bounces for {self.config.bounce_domain}")
        try:
            decoded = verp.decode(address, self.config.secret, self.config.bounce_domain)
        except verp.InvalidVerp:
            if local.lower().startswith(f"{verp.PREFIX}-"):
                return self._reject("invalid_return_path",
                                    f"550 5.7.1 <{address}>: invalid return path")
            return self._reject("unknown_address",
                                f"550 5.1.1 <{address}>: Recipient address rejected: no such bounce address")
        try:
            original = await self.originals.find(decoded, address)
        except LookupUnavailable as e:
            log.warning("bounce.lookup_unavailable", error=str(e))
            metrics.rejected("lookup_unavailable")
            return LOOKUP_UNAVAILABLE
        if original is not None:
            return original
        return self._unknown_message(decoded, address)

    def _unknown_message(self, decoded: verp.DecodedVerp, address: str) -> str:
        """A verified return path of a message we have no record of: not recorded yet (451: the recorder
        may be behind), or older than the grace and gone (550)."""
        age = id_age_s(decoded.message_id, int(time.time() * 1000))
        if age is not None and age < self.config.unknown_grace_s:
            metrics.rejected("message_not_recorded")
            return f"451 4.3.0 <{address}>: message not recorded yet, try again later"
        return self._reject("unknown_message",
                            f"550 5.1.1 <{address}>: Recipient address rejected: unknown message")

    @staticmethod
    def _reject(why: str, reply: str) -> str:
        log.info("bounce.rcpt_rejected", why=why)
        metrics.rejected(why)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store a DMARC report (to dmarc@), parse, publish one event per return path; 250 only after
        the report is committed and every PubAck."""
        assert isinstance(envelope, BounceEnvelope)
        if envelope.originals and not self.queue_connected():
            metrics.rejected("queue_unavailable")
            return QUEUE_UNAVAILABLE
        raw = envelope.original_content or b""
        self.in_data += 1
        self.idle.clear()
        try:
            if envelope.dmarc:
                assert self.reports is not None
                try:
                    report_reply = await dmarc_mail.take_report(raw, self.reports)
                except dmarc_mail.StoreUnavailable as unavailable:
                    log.warning("bounce.dmarc_store_unavailable", error=str(unavailable))
                    metrics.rejected("report_store_unavailable")
                    return TEMPORARY_ERROR
                if not envelope.originals:
                    return report_reply
            # parsing is pure CPU on untrusted input of up to the size limit: keep it off the loop
            results = await asyncio.to_thread(parse_bounce, raw)
            events = [e for o in envelope.originals if (e := self._event_for(o, results, raw)) is not None]
            for ev in events:
                await publish_event(self.js, ev)
        except (nats.errors.Error, TimeoutError, OSError) as e:
            log.warning("bounce.publish_failed", error=str(e) or type(e).__name__)
            metrics.rejected("queue_unavailable")
            return QUEUE_UNAVAILABLE
        finally:
            self.in_data -= 1
            if not self.in_data:
                self.idle.set()
        self._count(results, events)
        for ev in events:
            log.info("bounce.received", type=ev.type, reason=ev.reason, hardbounce=ev.hardbounce,
                     message_id=ev.message_id, account_id=ev.account_id, event_id=ev.event_id)
            if self.on_event is not None:
                self.on_event(ev, raw)
        if not events:
            log.info("bounce.discarded", kind=_kind(results), size=len(raw),
                     message_ids=[o.message_id for o in envelope.originals])
            return "250 2.0.0 Ok: not a bounce, discarded"
        return f"250 2.0.0 Ok: {len(events)} event(s) recorded"

    def _event_for(self, original: Original, results: list[BounceResult],
                   raw: bytes) -> envelope_pb2.Event | None:
        """The event a report mail means for one original recipient, or None (not a failure report)."""
        feedback = [r for r in results if r.reason == "feedback"]
        if feedback:
            return _event("complained", original, feedback[0], raw)
        result = pick_result(original, results)
        return None if result is None else _event("bounced", original, result, raw)

    @staticmethod
    def _count(results: list[BounceResult], events: list[envelope_pb2.Event]) -> None:
        if not events:
            metrics.RECEIVED.labels(_kind(results)).inc()
        for ev in events:
            metrics.RECEIVED.labels(ev.type).inc()
            metrics.REASONS.labels(bounded(ev.reason)).inc()

    async def handle_exception(self, error: Exception) -> str:
        """A temporary failure without the exception text (aiosmtpd's default is a permanent 500 that
        leaks it): the remote MTA keeps the bounce and retries."""
        log.error("bounce.smtp_exception", exc_info=error)
        metrics.rejected("error")
        return TEMPORARY_ERROR


def _kind(results: list[BounceResult]) -> str:
    """What a mail that produced no event was, for the log line and the metric."""
    if results and all(r.reason == "vacation" for r in results):
        return "autoreply"
    if any(r.action == "delayed" for r in results):
        return "delayed"
    return "not_bounce"


def pick_result(original: Original, results: list[BounceResult]) -> BounceResult | None:
    """The failure a report mail states for ``original``.

    Only failures count: a success (``delivered``/``relayed``) or delay (``delayed``) notice and an
    auto-reply are not bounces. A result naming the original recipient wins; otherwise the first failure
    stands for it (the return path already proves which recipient the mail is about, and a forwarded
    message's DSN names the address it was forwarded to).
    """
    failures = [r for r in results if r.reason not in ("delivered", "vacation", "feedback")
                and r.action not in ("delayed", "delivered", "relayed", "expanded")]
    if not failures:
        return None
    for r in failures:
        if r.recipient and r.recipient.strip("<>").lower() == original.recipient.lower():
            return r
    return failures[0]


def bounce_digest(raw: bytes) -> str:
    """Identity of a bounce mail: its Message-ID when it has one (a re-sent DSN keeps it), else its
    bytes. Part of the event id, so the same report stored twice is one event."""
    headers = BytesHeaderParser().parsebytes(raw[:65536])
    message_id = (headers.get("Message-ID") or "").strip()
    basis = message_id.encode("utf-8", "replace") if message_id else raw
    return hashlib.sha256(basis).hexdigest()[:16]


def _event(event_type: str, original: Original, r: BounceResult, raw: bytes) -> envelope_pb2.Event:
    fields: dict[str, Any] = {"reason": bounded(r.reason), "hardbounce": r.hardbounce,
                              "remote_mta": r.remote_mta or "", "response": r.diagnostic,
                              "enhanced_status": r.status or "", "smtp_code": r.replycode or 0}
    if event_type == "complained":
        fields = {"reason": "feedback", "hardbounce": False, "feedback_type": r.feedbacktype or ""}
    ev = make_event(event_type, account_id=original.account_id, message_id=original.message_id,
                    recipient=original.recipient, tags=list(original.tags), metadata=dict(original.metadata),
                    **fields)
    # "<message id>.<type>.d<digest>.<recipient>": the attempt slot names the report mail instead
    ev.event_id = f"{original.message_id}.{event_type}.d{bounce_digest(raw)}.{original.recipient.lower()}"
    return ev


class BounceSMTP(SMTP):
    """aiosmtpd's SMTP for the bounce MX: no AUTH, enhanced status codes, connection tracking."""

    def __init__(self, handler: BounceHandler, *, connections: set[BounceSMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._connections = connections

    def _create_envelope(self) -> Envelope:
        return BounceEnvelope()

    async def smtp_AUTH(self, arg: str) -> None:
        """No AUTH at all: the MX of a bounce domain has no users, and relays nothing."""
        await self.push(NO_AUTH)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status in _REWRITES:
            metrics.rejected("too_big")
            await super().push(_REWRITES[status])
        else:
            await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._connections.discard(self)
        super().connection_lost(error)

    def close_for_shutdown(self) -> None:
        """Say 421 (RFC 5321 3.8) and hang up; an unanswered transaction stays with the remote MTA."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(SHUTDOWN_REPLY)
            transport.close()


class BounceListener:
    """The listening socket and its live connections, so shutdown can let a DATA in progress finish."""

    def __init__(self, server: asyncio.Server, handler: BounceHandler, connections: set[BounceSMTP]) -> None:
        self._server = server
        self.handler = handler
        self._connections = connections
        self.port = int(server.sockets[0].getsockname()[1])  # the bound port (port 0 picks one)

    @property
    def listening(self) -> bool:
        return self._server.is_serving()

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, refuse new recipients, give DATA in progress up to ``grace_s`` to publish, then
        close every connection with 421. A transaction cut off was never answered 250: it is retried."""
        self.handler.closing = True
        self._server.close()
        try:
            await asyncio.wait_for(self.handler.idle.wait(), grace_s)
        except TimeoutError:
            log.warning("bounce.shutdown_cut_transactions", count=self.handler.in_data)
        for conn in list(self._connections):
            conn.close_for_shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)


def quiet_aiosmtpd_log() -> None:
    """aiosmtpd logs every command (senders, recipients) at INFO on "mail.log"; our own lines cover
    what matters."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)


async def start_receiver(handler: BounceHandler, *, host: str, port: int, hostname: str,
                         max_message_size: int, timeout_s: float) -> BounceListener:
    """Bind ``host:port`` (0 picks a free port) and serve the bounce MX on the running loop."""
    loop = asyncio.get_running_loop()
    connections: set[BounceSMTP] = set()
    quiet_aiosmtpd_log()

    def factory() -> BounceSMTP:
        return BounceSMTP(handler, connections=connections, loop=loop, hostname=hostname,
                          ident="Postwire bounce MX", data_size_limit=max_message_size, decode_data=False,
                          timeout=timeout_s)

    server = await loop.create_server(factory, host, port)
    log.info("bounce.receiver_listening", host=host, port=server.sockets[0].getsockname()[1])
    return BounceListener(server, handler, connections)
