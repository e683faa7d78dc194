"""Bounce forwarding by SMTP: the classified bounce, with the original report attached, mailed to an
address the account chose (the other way customers receive bounces, besides the events API/webhooks).

Which accounts forward, and where, comes from ``POSTWIRE_BOUNCE_FORWARD`` (JSON ``{"<account id>":
"<address>"}``) until accounts have a settings column and an API for it. Forwarding happens after the
event is durable and the remote MTA has its 250; it is best effort (a few tries with backoff while the
process runs, counted in ``postwire_bounce_forwarded_total``): the event in EVENTS is the record, the
forwarded copy a convenience.

The forwarded mail has a null envelope sender (``MAIL FROM:<>``), like any delivery report, so a
forwarding address that fails cannot start a bounce loop, and ``Auto-Submitted: auto-generated`` so
vacation responders stay quiet (RFC 3834).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib
import structlog

from postwire.bounce import metrics
from postwire.core.lifecycle import finish_or_cancel
from postwire.v1 import envelope_pb2

log = structlog.get_logger(__name__)

_BACKOFF_S = (1.0, 5.0, 30.0)


@dataclass(frozen=True)
class RelayConfig:
    """The SMTP relay forwarded bounces are handed to."""

    host: str
    port: int
    from_address: str  # the From: header; the envelope sender is always null
    timeout_s: float = 30.0
    validate_certs: bool = True  # STARTTLS is used when offered


def summary(event: envelope_pb2.Event) -> str:
    """The human-readable classification at the top of the forwarded mail."""
    verdict = "hard" if event.hardbounce else "soft"
    lines = [
        f"Postwire received a {'complaint' if event.type == 'complained' else 'bounce'} for a message "
        "sent from your account.",
        "",
        f"Recipient:       {event.recipient}",
        f"Message id:      {event.message_id}",
        f"Event id:        {event.event_id}",
        f"Type:            {event.type}",
        f"Reason:          {event.reason} ({verdict} bounce)" if event.type == "bounced"
        else f"Feedback type:   {event.feedback_type or 'unknown'}",
    ]
    for label, value in (("Status", event.enhanced_status), ("SMTP code", event.smtp_code or ""),
                         ("Reported by", event.remote_mta), ("Diagnostic", event.response)):
        if value:
            lines.append(f"{label + ':':<16} {value}")
    lines += ["", "The original report is attached."]
    return "\n".join(lines) + "\n"


def forward_message(event: envelope_pb2.Event, original_dsn: bytes, to_address: str,
                    from_address: str) -> EmailMessage:
    """The forwarded mail: a text summary, then the report as message/rfc822 (as received)."""
    msg = EmailMessage()
    msg["From"] = f"Postwire bounces <{from_address}>"
    msg["To"] = to_address
    hard = " hard" if event.hardbounce else ""
    msg["Subject"] = f"[postwire]{hard} {event.type}: {event.recipient} ({event.reason})"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=from_address.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Postwire-Event-Id"] = event.event_id
    msg["X-Postwire-Message-Id"] = event.message_id
    msg.set_content(summary(event))
    _attach_report(msg, original_dsn)
    return msg


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


async def forward_bounce(event: envelope_pb2.Event, original_dsn: bytes, to_address: str,
                         relay: RelayConfig) -> None:
    """Send one forwarded bounce through the relay; raises aiosmtplib.SMTPException / OSError."""
    data = forward_message(event, original_dsn, to_address, relay.from_address).as_bytes()
    client = aiosmtplib.SMTP(hostname=relay.host, port=relay.port, timeout=relay.timeout_s,
                             validate_certs=relay.validate_certs)
    async with client:  # sendmail, not aiosmtplib.send: that one refuses the null sender
        await client.sendmail("", [to_address], data)


class Forwarder:
    """Forwards the bounces of the accounts in ``routes`` in the background, a few tries each."""

    def __init__(self, routes: dict[str, str], relay: RelayConfig,
                 backoff_s: tuple[float, ...] = _BACKOFF_S) -> None:
        self._routes = dict(routes)
        self._relay = relay
        self._backoff_s = backoff_s
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: envelope_pb2.Event, original_dsn: bytes) -> None:
        """The receiver's ``on_event`` hook: start forwarding if the account asked for it."""
        to_address = self._routes.get(event.account_id)
        if not to_address:
            return
        task = asyncio.get_running_loop().create_task(self._forward(event, original_dsn, to_address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, event: envelope_pb2.Event, original_dsn: bytes, to_address: str) -> None:
        for tries in range(len(self._backoff_s) + 1):
            try:
                await forward_bounce(event, original_dsn, to_address, self._relay)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                if tries == len(self._backoff_s):
                    metrics.FORWARDED.labels("failed").inc()
                    log.warning("bounce.forward_failed", event_id=event.event_id, error=str(e))
                    return
                await asyncio.sleep(self._backoff_s[tries])
            else:
                metrics.FORWARDED.labels("sent").inc()
                log.info("bounce.forwarded", event_id=event.event_id, account_id=event.account_id)
                return

    async def close(self, grace_s: float) -> None:
        """Give forwards in progress ``grace_s`` to finish, then cancel the rest (logged as lost)."""
        cancelled = await finish_or_cancel(self._tasks, grace_s)
        if cancelled:
            log.warning("bounce.forwards_cancelled", count=len(cancelled))
