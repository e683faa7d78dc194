"""RFC 5965 Abuse Reporting Format: complaint and feedback-loop reports → reason "feedback".

Besides the standard multipart/report; report-type=feedback-report, two non-standard shapes are common
enough to handle: Microsoft's JMRP/SNDS complaints (the original message attached, the complaining
recipient in X-HmXmrOriginalRecipient) and Apple Mail's one-click unsubscribe (X-Apple-Unsubscribe).
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from postwire.bounce_classifier.delivery_status import unfold_fields
from postwire.bounce_classifier.message_fields import (
    addresses,
    content_type,
    extract_addresses,
    header,
    original_headers,
    part_text,
    walk_leaves,
)


@dataclass(frozen=True, slots=True)
class Feedback:
    """One complained-about recipient; recipient is None when the report redacts it."""

    recipient: str | None
    feedbacktype: str
    source_ip: str | None = None


def parse_feedback(msg: Message) -> list[Feedback] | None:
    """Feedback entries of a complaint report, or None when the mail is not one."""
    report = _report_part(msg)
    if report is not None:
        return _from_report(msg, part_text(report))
    if msg.get("X-Apple-Unsubscribe", "").strip().lower() == "true":
        sender = addresses(header(msg, "From"))
        return [Feedback(sender[0] if sender else None, "opt-out")]
    original = original_headers(msg)
    if original is not None and original.get("X-HmXmrOriginalRecipient"):
        return [Feedback(_first(original.get("X-HmXmrOriginalRecipient", "")), "abuse")]
    return None


def _report_part(msg: Message) -> Message | None:
    for part in walk_leaves(msg):
        if content_type(part) == "message/feedback-report":
            return part
    return None


def _from_report(msg: Message, text: str) -> list[Feedback]:
    fields = unfold_fields(text)
    kind = next((v.lower() for n, v in fields if n == "feedback-type"), "abuse")
    source_ip = next((v for n, v in fields if n == "source-ip"), None)
    named = [v for n, v in fields if n in ("original-rcpt-to", "removal-recipient")]
    rcpts = [a for v in named for a in extract_addresses(v)]
    if not rcpts:
        rcpts = _original_to(msg)
    if not rcpts:
        return [Feedback(None, kind, source_ip)]
    return [Feedback(r, kind, source_ip) for r in rcpts]


def _original_to(msg: Message) -> list[str]:
    """The complained-about recipient is the To: of the reported message when the report omits it."""
    original = original_headers(msg)
    if original is None:
        return []
    found = original.get("X-HmXmrOriginalRecipient") or header(original, "To")
    return addresses(found)[:1] if found else []


def _first(value: str) -> str | None:
    found = extract_addresses(value)
    return found[0] if found else None
