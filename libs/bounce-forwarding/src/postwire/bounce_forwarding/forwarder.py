"""Bounce forwarding: delivery status notifications (RFC 3464) mailed to an address the account chose,
honouring the sender's RFC 3461 parameters (the other way customers receive bounces, besides the
events API and webhooks; docs/bounces.md).

Which accounts forward, and where, comes from ``POSTWIRE_BOUNCE_FORWARD`` (JSON ``{"<account id>":
"<address>"}``) until accounts have a settings column and an API for it. Two components feed the
``Forwarder``, each with the events only it sees once:

- the receiver (``Forwarder.__call__``): ``bounced`` and ``complained`` events, with the report mail
  that caused them, after the remote MTA has its 250;
- the recorder (``Forwarder.recorded``): ``failed`` (a synchronous rejection, an expiry, an unroutable
  address), ``suppressed``, ``deferred`` and ``delivered`` events, after the transaction that stored
  them committed. The recorder hands over only events it inserted, so a redelivered event is never
  forwarded twice, however many recorder replicas run.

What the sender asked for — NOTIFY and ORCPT of the recipient, RET and ENVID of the message — is in
the recipient's ``accepted`` event (``events.data``, written by ``recorder.event_data`` with
``postwire.db.events_query.dsn_data``), read with one primary-key lookup per forward, and only for
accounts that forward. ``wanted`` applies RFC 3461 4.1: NEVER → nothing; NOTIFY given → only the kinds
it names; no NOTIFY → failures only. Complaints are not delivery status notifications and are always
forwarded.

A forwarded report is a message like any other: it is submitted to INBOUND (``postwire.core.intake``,
source ``bounce-forward``) under the forwarding account, so the dispatcher delivers it with retries,
traffic shaping and DKIM, and it shows in the account's events. Its message id is derived from the
event's, so a report submitted twice (a crash between submit and bookkeeping, a second replica) is one
message: INBOUND drops the duplicate. Handing it to INBOUND is best effort (a few tries with backoff
while NATS cannot take it, counted in ``postwire_bounce_forwarded_total``); once there it is as durable
as any mail. It has a null envelope sender (``MAIL FROM:<>``), like any delivery report, and no report
is ever made about a message whose own envelope sender was null (RFC 3461 6.2, RFC 5321 4.5.5): a
forwarding address that fails cannot start a loop. ``Auto-Submitted: auto-generated`` keeps vacation
responders quiet (RFC 3834).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime, formatdate
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.bounce_classifier import message_fields as mime
from postwire.bounce_forwarding import metrics
from postwire.core.events import event_id
from postwire.core.ids import derived_id
from postwire.core.intake import Intake, QueueUnavailable, Submission
from postwire.core.lifecycle import finish_or_cancel
from postwire.db.models import Event
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

_BACKOFF_S = (1.0, 5.0, 30.0)
# events Postwire produced itself, forwarded from the recorder; bounced/complained come from the receiver
RECORDED_TYPES = ("failed", "suppressed", "deferred", "delivered")
# the NOTIFY keyword (RFC 3461 4.1) that asks for each kind of notification, and its RFC 3464 Action
NOTIFY_FOR = {"failed": "FAILURE", "bounced": "FAILURE", "suppressed": "FAILURE", "deferred": "DELAY",
              "delivered": "SUCCESS"}
# "relayed", not "delivered": the recipient's MX took the message, final delivery is its business, and
# with a VERP return path the dispatcher does not pass NOTIFY on (RFC 3461 5.2.2)
ACTION_OF = {"failed": "failed", "bounced": "failed", "suppressed": "failed", "deferred": "delayed",
             "delivered": "relayed"}
_EXCERPT_CHARS = 4000  # of the remote MTA's own explanation, quoted in the summary
_FIELD_CHARS = 900  # a DSN field stays one line, well under SMTP's 998
_STATUS_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
# DSN fields must stay as written: the default policy would fold a long one into RFC 2047 encoded-words
POLICY = email.policy.default.clone(max_line_length=998)
_DB_ERRORS = (OperationalError, DBAPIError, OSError, TimeoutError)


SOURCE = "bounce-forward"  # the source of a forwarded report's message (its events say so)


@dataclass(frozen=True)
class ReportConfig:
    """Who forwarded reports come from."""

    from_address: str  # the From: header; the envelope sender is always null
    reporting_mta: str = ""  # Reporting-MTA of the reports; empty: the domain of from_address


def forward_message_id(event: envelope_pb2.Event) -> str:
    """The message id of ``event``'s forwarded report: a sibling of the message's own id (same time part)
    drawn from the event id, so the same event always gives the same report message."""
    seed = int.from_bytes(hashlib.sha256(event.event_id.encode()).digest()[:8], "big")
    return derived_id(event.message_id, seed)


# ------------------------------------------------------------------------------ RFC 3461 request


@dataclass(frozen=True)
class DsnRequest:
    """What the sender asked for: NOTIFY and ORCPT (RCPT TO), RET and ENVID (MAIL FROM). Empty = not
    given; the defaults are failures only, full content."""

    notify: tuple[str, ...] = ()
    ret: str = ""
    envid: str = ""
    orcpt: str = ""
    arrival: datetime | None = None  # when Postwire accepted the message (the accepted event)
    null_sender: bool = False  # the message itself had MAIL FROM:<> (a report, an auto-reply): no reports

    @property
    def headers_only(self) -> bool:
        return self.ret.upper() == "HDRS"


def request_from(data: dict[str, Any], accepted_at: datetime | None = None) -> DsnRequest:
    """The request in an ``accepted`` event's data (``events.data``: a null sender is stored as no
    ``mail_from``)."""
    dsn = data.get("dsn") or {}
    return DsnRequest(notify=tuple(str(n) for n in data.get("notify") or ()), ret=str(dsn.get("ret") or ""),
                      envid=str(dsn.get("envid") or ""), orcpt=str(data.get("orcpt") or ""),
                      arrival=accepted_at, null_sender=str(data.get("mail_from") or "") in ("", "<>"))


def wanted(event_type: str, request: DsnRequest) -> bool:
    """Whether the sender wants a notification for this event (RFC 3461 4.1). Complaints are not
    delivery status notifications: always forwarded."""
    if request.null_sender:
        return False
    if event_type == "complained":
        return True
    notify = {n.strip().upper() for n in request.notify}
    kind = NOTIFY_FOR.get(event_type)
    if kind is None or "NEVER" in notify:
        return False
    return kind in notify if notify else kind == "FAILURE"


async def load_request(sessions: async_sessionmaker[AsyncSession], message_id: str,
                       recipient: str) -> DsnRequest | None:
    """The request stored with the recipient's ``accepted`` event (one primary-key lookup: the id is the
    one ``make_event`` gave it); None while that event is not recorded."""
    stmt = select(Event.data, Event.at).where(Event.event_id == event_id(message_id, recipient, "accepted"))
    async with sessions() as session:
        row = (await session.execute(stmt)).first()
    return None if row is None else request_from(row.data or {}, row.at)


async def first_deferral(sessions: async_sessionmaker[AsyncSession], ev: envelope_pb2.Event) -> bool:
    """Whether ``ev`` is the recipient's first recorded deferral: NOTIFY=DELAY gets one delay notice,
    like Postfix's delay warning, not one per retry."""
    at = ev.at.ToDatetime(tzinfo=UTC)
    stmt = select(Event.event_id).where(
        Event.message_id == ev.message_id, Event.recipient == ev.recipient, Event.type == "deferred",
        or_(Event.at < at, and_(Event.at == at, Event.event_id < ev.event_id))).limit(1)
    async with sessions() as session:
        return await session.scalar(stmt) is None


# ------------------------------------------------------------------------------------- the mail


def summary(event: envelope_pb2.Event, request: DsnRequest = DsnRequest(), excerpt: str = "",
            attached: str = "") -> str:
    """The human-readable part at the top of the forwarded mail."""
    verdict = "hard" if event.hardbounce else "soft"
    opening = {
        "bounced": "Postwire received a bounce for a message sent from your account.",
        "complained": "Postwire received a complaint for a message sent from your account.",
        "failed": "Postwire could not deliver a message sent from your account.",
        "suppressed": "Postwire did not send a message from your account to this recipient: the address "
                      "is on the account's suppression list.",
        "deferred": "Postwire could not deliver a message sent from your account yet. It keeps trying; "
                    "you will not be told again unless it finally fails.",
        "delivered": "Postwire delivered a message sent from your account to the recipient's mail server.",
    }.get(event.type, f"Postwire recorded a {event.type} event for a message sent from your account.")
    lines = [opening, "", f"Recipient:       {event.recipient}"]
    if request.orcpt:
        lines.append(f"Original rcpt:   {_field(request.orcpt)}")
    if request.envid:
        lines.append(f"Envelope id:     {_field(request.envid)}")
    lines += [f"Message id:      {event.message_id}", f"Event id:        {event.event_id}",
              f"Type:            {event.type}"]
    if event.type == "complained":
        lines.append(f"Feedback type:   {event.feedback_type or 'unknown'}")
    elif event.type in ("bounced", "failed"):
        lines.append(f"Reason:          {event.reason or 'undefined'} ({verdict} bounce)")
    elif event.reason:
        lines.append(f"Reason:          {event.reason}")
    for label, value in (("Status", event.enhanced_status), ("SMTP code", event.smtp_code or ""),
                         ("Reported by", event.remote_mta), ("Mail server", event.mx_host),
                         ("Diagnostic", event.response)):
        if value:
            lines.append(f"{label + ':':<16} {value}")
    if excerpt:
        lines += ["", "The recipient's mail system said:", ""]
        lines += [f"  {line}".rstrip() for line in excerpt.splitlines()]
    if attached:
        lines += ["", attached]
    return "\n".join(lines) + "\n"


def forward_message(event: envelope_pb2.Event, report: bytes | None, to_address: str, from_address: str,
                    request: DsnRequest = DsnRequest(), reporting_mta: str = "") -> EmailMessage:
    """The forwarded mail. A complaint: the summary with the report attached as received. Anything else:
    an RFC 3464 multipart/report — the summary, a message/delivery-status built from the event and the
    sender's request (Original-Envelope-Id, Original-Recipient), and the returned message taken from
    the remote report when it carries one (headers only under RET=HDRS)."""
    domain = from_address.rpartition("@")[2] or "postwire.invalid"
    msg = EmailMessage(policy=POLICY)
    msg["From"] = f"Postwire bounces <{from_address}>"
    msg["To"] = to_address
    hard = " hard" if event.hardbounce else ""
    reason = f" ({event.reason})" if event.reason else ""
    msg["Subject"] = f"[postwire]{hard} {event.type}: {event.recipient}{reason}"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = f"<{hashlib.sha256(event.event_id.encode()).hexdigest()[:32]}.fwd@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Postwire-Event-Id"] = event.event_id
    msg["X-Postwire-Message-Id"] = event.message_id
    if event.type == "complained":
        _set_text(msg, summary(event, request, attached="The original report is attached."))
        if report is not None:
            _attach_report(msg, report)
        return msg
    original = mime.load(report) if report is not None else None
    returned = _returned_part(original, request.headers_only) if original is not None else None
    attached = "" if returned is None else (
        "The headers of the returned message are attached." if returned.get_content_type() ==
        "text/rfc822-headers" else "The returned message is attached.")
    excerpt = _excerpt(original, request.headers_only) if original is not None else ""
    _set_text(msg, summary(event, request, excerpt, attached))
    msg.make_mixed()
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")
    msg.attach(_delivery_status(event, request, reporting_mta or domain))
    if returned is not None:
        msg.attach(returned)
    return msg


def _set_text(part: EmailMessage, text: str, subtype: str = "plain") -> None:
    """7bit when it can be, else quoted-printable: the receiving MTA may not offer 8BITMIME."""
    part.set_content(text, subtype=subtype, cte=None if text.isascii() else "quoted-printable")


def _field(value: str, limit: int = _FIELD_CHARS) -> str:
    """A DSN field value: one line of printable ASCII (message/delivery-status is not UTF-8)."""
    text = " ".join(value.split())
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


def _status(event: envelope_pb2.Event) -> str:
    if _STATUS_RE.fullmatch(event.enhanced_status):
        return event.enhanced_status
    if event.type == "delivered":
        return "2.0.0"
    return "4.0.0" if event.type == "deferred" or 400 <= event.smtp_code < 500 else "5.0.0"


def _diagnostic(event: envelope_pb2.Event) -> str:
    if event.type == "suppressed":
        return f"X-Postwire; address suppressed ({_field(event.reason or 'undefined', 100)})"
    text = _field(event.response)
    if not event.smtp_code:
        return f"X-Postwire; {text}" if text else ""
    if not text.startswith(str(event.smtp_code)):
        text = f"{event.smtp_code} {text}".rstrip()
    return f"smtp; {text}"


def _delivery_status(event: envelope_pb2.Event, request: DsnRequest, reporting_mta: str) -> EmailMessage:
    """message/delivery-status: the per-message fields, then this recipient's (RFC 3464 2.2, 2.3)."""
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {_field(reporting_mta, 255)}"
    if request.envid:
        per_message["Original-Envelope-Id"] = _field(request.envid)
    if request.arrival is not None:
        per_message["Arrival-Date"] = format_datetime(request.arrival.astimezone(UTC))
    per_rcpt = Message()
    if request.orcpt:
        orcpt = _field(request.orcpt)
        per_rcpt["Original-Recipient"] = orcpt if ";" in orcpt else f"rfc822; {orcpt}"
    per_rcpt["Final-Recipient"] = f"rfc822; {_field(event.recipient)}"
    per_rcpt["Action"] = ACTION_OF.get(event.type, "failed")
    per_rcpt["Status"] = _status(event)
    mta = event.remote_mta or event.mx_host
    if mta:
        per_rcpt["Remote-MTA"] = f"dns; {_field(mta, 255)}"
    if diagnostic := _diagnostic(event):
        per_rcpt["Diagnostic-Code"] = diagnostic
    if event.HasField("at"):
        per_rcpt["Last-Attempt-Date"] = format_datetime(event.at.ToDatetime(tzinfo=UTC))
    part = EmailMessage(policy=POLICY)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload([per_message, per_rcpt])
    return part


def _returned_part(report: Message, headers_only: bool) -> EmailMessage | None:
    """The returned message the remote report carries (its message/rfc822 or text/rfc822-headers part):
    whole, or as text/rfc822-headers when the sender asked for headers only (RET=HDRS). None when the
    report has none (a notice without the original, a non-standard text bounce)."""
    for part in mime.walk_leaves(report):
        ctype = mime.content_type(part)
        if ctype == "text/rfc822-headers":
            return _headers_part(_header_block(mime.part_text(part)))
        if ctype != "message/rfc822":
            continue
        payload = part.get_payload()
        if not (isinstance(payload, list) and payload and isinstance(payload[0], Message)):
            return None
        inner = payload[0]
        if not headers_only:
            whole = EmailMessage(policy=POLICY)
            whole.set_content(inner)
            del whole["MIME-Version"]  # a body part, not a message
            try:
                whole.as_bytes()
            except Exception:  # a returned message too broken to re-serialise: its headers at least
                pass
            else:
                return whole
        return _headers_part(_headers_of(inner))
    return None


def _header_block(text: str) -> str:
    """Up to the first empty line: a text/rfc822-headers part that carries a body too loses it."""
    lines = text.replace("\r\n", "\n").split("\n")
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    return "\n".join(lines[:end]) + "\n"


def _headers_of(msg: Message) -> str:
    lines = []
    for name, value in msg.raw_items():
        text = f"{name}: {value}".replace("\r\n", "\n").replace("\r", "\n")
        lines.append(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return "\n".join(lines) + "\n"


def _headers_part(headers: str) -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    _set_text(part, headers, "rfc822-headers")
    del part["MIME-Version"]  # a body part, not a message
    return part


def _excerpt(report: Message, headers_only: bool) -> str:
    """The remote MTA's own explanation, quoted in the summary: the first text/plain part of a MIME
    report; the whole text of a plain notice, unless only headers may come back (such notices often
    quote the original message inline)."""
    leaves = mime.walk_leaves(report)
    if len(leaves) == 1 and leaves[0] is report:
        text = "" if headers_only or mime.content_type(report) != "text/plain" else mime.part_text(report)
    else:
        text = next((mime.part_text(p) for p in leaves if mime.content_type(p) == "text/plain"), "")
    text = text.replace("\r\n", "\n").strip("\n")
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS].rstrip() + "\n[…]"


def _attach_report(msg: EmailMessage, original_dsn: bytes) -> None:
    """message/rfc822 must not be base64-encoded (RFC 2046 5.2.1), so the report is attached parsed. A
    report too broken to be re-serialised goes as an opaque .eml file instead of being lost."""
    report = email.message_from_bytes(original_dsn, policy=email.policy.compat32)
    candidate = EmailMessage()
    candidate.add_attachment(report)
    try:
        candidate.as_bytes()
    except Exception:  # any serialisation failure of hostile input: fall back to opaque bytes
        msg.add_attachment(original_dsn, maintype="application", subtype="octet-stream",
                           filename="bounce.eml")
        return
    msg.add_attachment(report)


def report_submission(event: envelope_pb2.Event, data: bytes, to_address: str) -> Submission:
    """The report as a submission of the event's account: null sender, no CSS work, no tracking."""
    return Submission(account_id=event.account_id, mail_from="", recipients=[to_address], raw=data,
                      source=SOURCE, subject=f"{event.type}: {event.recipient}", inline_css=False)


# ----------------------------------------------------------------------------------- forwarder


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text.strip() else type(e).__name__


class Forwarder:
    """Forwards the reports of the accounts in ``routes`` in the background, a few tries each.
    ``sessions`` reads the sender's RFC 3461 request; without it every request is the default.

    At most ``concurrency`` forwards look up and send at once: a recorder catching up on a backlog hands
    over hundreds of events per batch, and their lookups share the database pool with the recorder."""

    def __init__(self, routes: dict[str, str], intake: Intake, config: ReportConfig,
                 sessions: async_sessionmaker[AsyncSession] | None = None,
                 backoff_s: tuple[float, ...] = _BACKOFF_S, concurrency: int = 4) -> None:
        self._routes = dict(routes)
        self._intake = intake
        self._config = config
        self._sessions = sessions
        self._backoff_s = backoff_s
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: envelope_pb2.Event, original_dsn: bytes) -> None:
        """The receiver's ``on_event`` hook (bounced, complained): forward if the account asked for it."""
        self._start(event, original_dsn)

    def recorded(self, events: Sequence[envelope_pb2.Event]) -> None:
        """The recorder's hook: events it has just stored for the first time."""
        for ev in events:
            if ev.type in RECORDED_TYPES:
                self._start(ev, None)

    def _start(self, event: envelope_pb2.Event, report: bytes | None) -> None:
        to_address = self._routes.get(event.account_id)
        if not to_address:
            return
        task = asyncio.get_running_loop().create_task(self._forward(event, report, to_address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, event: envelope_pb2.Event, report: bytes | None, to_address: str) -> None:
        async with self._slots:
            await self._forward_one(event, report, to_address)

    async def _forward_one(self, event: envelope_pb2.Event, report: bytes | None, to_address: str) -> None:
        request = await self._request(event)
        if request is None:
            metrics.FORWARDED.labels("failed").inc()
            return
        send: bool | None = wanted(event.type, request)
        if send and event.type == "deferred":
            send = await self._first_deferral(event)
        if not send:
            metrics.FORWARDED.labels("failed" if send is None else "skipped").inc()
            log.info("bounce.forward_skipped", event_id=event.event_id, type=event.type,
                     notify=list(request.notify))
            return
        try:
            data = forward_message(event, report, to_address, self._config.from_address, request,
                                   self._config.reporting_mta).as_bytes(policy=POLICY)
        except Exception:  # a value the mail library refuses: a bug to see, not a reason to retry
            metrics.FORWARDED.labels("failed").inc()
            log.exception("bounce.forward_failed", event_id=event.event_id, stage="build")
            return
        submission = report_submission(event, data, to_address)
        for tries in range(len(self._backoff_s) + 1):
            try:
                await self._intake.submit(submission, forward_message_id(event))
            except QueueUnavailable as e:
                if tries == len(self._backoff_s):
                    metrics.FORWARDED.labels("failed").inc()
                    log.warning("bounce.forward_failed", event_id=event.event_id, error=str(e))
                    return
                await asyncio.sleep(self._backoff_s[tries])
            else:
                metrics.FORWARDED.labels("sent").inc()
                log.info("bounce.forwarded", event_id=event.event_id, account_id=event.account_id,
                         type=event.type, report_id=forward_message_id(event))
                return

    async def _request(self, event: envelope_pb2.Event) -> DsnRequest | None:
        """The sender's request, retried while PostgreSQL fails; None if it never answered (then nothing
        is sent: a NOTIFY=NEVER must not be overridden by an outage). An accepted event not recorded
        yet (another recorder replica holds it) is waited for as long, then the defaults apply."""
        if self._sessions is None:
            return DsnRequest()
        error = ""
        for tries in range(len(self._backoff_s) + 1):
            try:
                found = await load_request(self._sessions, event.message_id, event.recipient)
            except _DB_ERRORS as e:
                error = _first_line(e)
            else:
                # the receiver only takes bounces for recorded recipients: their accepted event is there
                if found is not None or event.type not in RECORDED_TYPES:
                    return found or DsnRequest()
                error = ""
            if tries < len(self._backoff_s):
                await asyncio.sleep(self._backoff_s[tries])
        if not error:
            return DsnRequest()
        log.warning("bounce.forward_failed", event_id=event.event_id, error=error, stage="dsn_lookup")
        return None

    async def _first_deferral(self, event: envelope_pb2.Event) -> bool | None:
        """None when PostgreSQL cannot tell: a delay notice is the least important, skip it rather than
        risk repeating it."""
        if self._sessions is None:
            return True
        try:
            return await first_deferral(self._sessions, event)
        except _DB_ERRORS as e:
            log.warning("bounce.forward_failed", event_id=event.event_id, error=_first_line(e),
                        stage="deferral_lookup")
            return None

    async def close(self, grace_s: float) -> None:
        """Give forwards in progress ``grace_s`` to finish, then cancel the rest (logged as lost)."""
        cancelled = await finish_or_cancel(self._tasks, grace_s)
        if cancelled:
            log.warning("bounce.forwards_cancelled", count=len(cancelled))
