"""RFC 3834 automatic replies (vacation / out-of-office) → reason "vacation".

An auto-reply is not a failure, but senders want to know that a human will not read the message soon.
Checked only after the mail proved not to be a bounce: Exim and others put Auto-Submitted on bounces too.
"""

from __future__ import annotations

import re
from email.message import Message

from postwire.bounce_classifier.message_fields import addresses, header

_SUBJECT_RE = re.compile(
    r"^\s*(?:auto(?:matic)?[ \-]?(?:reply|response|antwort)|out of (?:the )?office|away from|"
    r"on vacation|vacation|abwesenheit|absence|r[ée]ponse automatique|自動応答)",
    re.IGNORECASE,
)
_BODY_RE = re.compile(
    r"\b(?:out of (?:the )?office|i am (?:currently )?(?:away|out|on vacation|on leave)|"
    r"returning (?:to the office )?on|limited access to (?:e-?mail|my mail)|will respond .* return)",
    re.IGNORECASE,
)


def auto_reply_sender(msg: Message, body: str) -> str | None:
    """The address that auto-replied, or None when the mail is not an auto-reply."""
    if not _looks_automatic(msg, body):
        return None
    sender = addresses(header(msg, "From"))
    return sender[0] if sender else None


def _looks_automatic(msg: Message, body: str) -> bool:
    auto_submitted = header(msg, "Auto-Submitted").strip().lower()
    if auto_submitted.startswith("auto-replied"):
        return True
    if _SUBJECT_RE.search(header(msg, "Subject")):
        return True
    if header(msg, "X-Autoreply") or header(msg, "X-Autorespond"):
        return True
    return bool(header(msg, "X-Auto-Response-Suppress")) and bool(_BODY_RE.search(body))
