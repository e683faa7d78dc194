"""RFC 3464 delivery-status fields: per-message and per-recipient blocks.

Parsed from text, not from the email package's sub-message objects, because many MTAs put the same
fields in a text/plain part (Amazon WorkMail, some Exchange relays), fold them oddly, or omit the blank
line between recipient blocks. A new recipient block starts whenever a recipient field repeats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postwire.bounce_classifier.message_fields import extract_addresses

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9\-]*)\s*:\s?(.*)$")
_RECIPIENT_FIELDS = {"final-recipient", "original-recipient", "x-actual-recipient"}
_PER_RECIPIENT = _RECIPIENT_FIELDS | {
    "action", "status", "diagnostic-code", "remote-mta", "last-attempt-date", "will-retry-until",
    "final-log-id", "x-supplementary-info", "x-display-name",
}


@dataclass(slots=True)
class RecipientStatus:
    """One per-recipient block of a delivery-status report."""

    final_recipient: str | None = None
    original_recipient: str | None = None
    action: str | None = None
    status: str | None = None
    diagnostic: str = ""
    diagnostic_type: str | None = None
    remote_mta: str | None = None

    @property
    def recipient(self) -> str | None:
        """Final-Recipient is what the reporting MTA tried; Original-Recipient only as a fallback."""
        return self.final_recipient or self.original_recipient


@dataclass(slots=True)
class DeliveryReport:
    """A parsed message/delivery-status body."""

    reporting_mta: str | None = None
    recipients: list[RecipientStatus] = field(default_factory=list)


def unfold_fields(text: str) -> list[tuple[str, str]]:
    """`Name: value` pairs in order, with RFC 5322 continuation lines joined by a space."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and pairs:
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        m = _FIELD_RE.match(line.strip())
        if m:
            pairs.append((m.group(1).lower(), m.group(2).strip()))
        elif line.strip() and pairs and pairs[-1][0] == "diagnostic-code":
            # unindented continuation of a long diagnostic (seen in hand-made or re-wrapped reports)
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip()}")
    return pairs


def parse_delivery_status(text: str) -> DeliveryReport:
    """Every per-recipient block in a delivery-status text, plus the reporting MTA."""
    report = DeliveryReport()
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        current: RecipientStatus | None = None
        for name, value in unfold_fields(block):
            if name == "reporting-mta":
                report.reporting_mta = report.reporting_mta or _typed_value(value)
                continue
            if name not in _PER_RECIPIENT:
                continue
            if current is None or (name in _RECIPIENT_FIELDS and _starts_new_block(current, name)):
                current = RecipientStatus()
                report.recipients.append(current)
            _apply(current, name, value)
    report.recipients = [r for r in report.recipients if r.recipient]
    return report


def _starts_new_block(current: RecipientStatus, name: str) -> bool:
    if name == "final-recipient":
        return current.final_recipient is not None
    if name == "original-recipient":
        return current.original_recipient is not None
    return False


def _apply(rec: RecipientStatus, name: str, value: str) -> None:
    if name == "final-recipient":
        rec.final_recipient = recipient_address(value)
    elif name == "original-recipient":
        rec.original_recipient = recipient_address(value)
    elif name == "x-actual-recipient" and rec.final_recipient is None:
        rec.final_recipient = recipient_address(value)
    elif name == "action":
        rec.action = value.split()[0].lower() if value.split() else None
    elif name == "status":
        rec.status = value.split()[0] if value.split() else None
    elif name == "diagnostic-code":
        kind, sep, text = value.partition(";")
        if sep and kind.strip() and " " not in kind.strip():  # "smtp;" alone: a type, no text
            rec.diagnostic_type, rec.diagnostic = kind.strip().lower(), text.strip()
        else:
            rec.diagnostic = value.strip()
    elif name == "remote-mta":
        rec.remote_mta = _typed_value(value)


def recipient_address(value: str) -> str | None:
    """`rfc822; <user@example.org>` → user@example.org; None when no mail address is present."""
    _, _, rest = value.partition(";")
    found = extract_addresses(rest or value)
    return found[0] if found else None


def _typed_value(value: str) -> str | None:
    """`dns; mx.example.org` → mx.example.org."""
    _, sep, rest = value.partition(";")
    out = (rest if sep else value).strip().strip("[]")
    return out or None
