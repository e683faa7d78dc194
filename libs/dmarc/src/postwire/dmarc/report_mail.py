"""A whole report mail (RFC 7489 section 7.2.1.1): the attachments that may hold the report, after the
mail has been checked for being some other kind of report.

A DMARC failure report (RFC 6591: ``multipart/report; report-type=feedback-report`` or a
``message/feedback-report`` part) and an SMTP TLS report (RFC 8460: ``report-type=tlsrpt``, an
``application/tlsrpt+gzip``/``+json`` part) are refused by name, so whoever sent one learns what it was.
Parts are walked iteratively with a depth and count bound, into attached messages too (a forwarded
report), and payloads are decoded from base64 or quoted-printable by the email package.
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections import deque
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import Message

from postwire.dmarc.errors import FAILURE_REPORT, NO_REPORT_ATTACHMENT, TLS_REPORT, InvalidReport
from postwire.dmarc.limits import Limits

_REPORT_TYPES = frozenset({
    "application/gzip", "application/x-gzip", "application/zip", "application/x-zip-compressed",
    "application/x-zip", "application/xml", "text/xml",
})
# reporters also send the report as application/octet-stream (or anything else) with a telling name
_REPORT_NAME = re.compile(r"\.(?:xml|xml\.gz|gz|zip)$", re.IGNORECASE)
_FAILURE_TYPES = frozenset({"message/feedback-report"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "base64": lambda data: binascii.a2b_base64(data, strict_mode=False),
    "quoted-printable": quopri.decodestring,
}
_TLS_TYPES = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json"})


def report_attachments(data: bytes, limits: Limits) -> list[bytes]:
    """The decoded payloads that may hold the aggregate report, most likely first.

    Raises `InvalidReport` for a failure report, a TLS report, or a mail with no candidate part.
    """
    mail = message_from_bytes(data, policy=policy.compat32)
    candidates: list[bytes] = []
    for part in _leaves(mail, limits):
        _refuse_other_reports(part)
        if _is_report_part(part):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.strip():
                candidates.append(payload)
    if not candidates:
        raise InvalidReport(NO_REPORT_ATTACHMENT, "the mail has no .xml, .xml.gz or .zip attachment "
                            "holding a DMARC aggregate report")
    return candidates


def _leaves(mail: Message, limits: Limits) -> list[Message]:
    """Every part of the mail, containers included, breadth first within the limits."""
    found: list[Message] = []
    pending: deque[tuple[Message, int]] = deque([(mail, 0)])
    while pending and len(found) < limits.max_mail_parts:
        part, depth = pending.popleft()
        found.append(part)
        if depth < limits.max_mail_depth:
            pending.extend((child, depth + 1) for child in _children(part))
    return found


def _children(part: Message) -> list[Message]:
    """The parts inside ``part``; an attached message sent base64- or QP-encoded (which RFC 2046 forbids,
    but mail libraries do) is decoded and parsed, not read as a message without headers."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return []
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if part.get_content_type() in _MESSAGE_TYPES and encoding in _DECODERS and payload:
        body = payload[0].get_payload() if isinstance(payload[0], Message) else payload[0]
        try:
            raw = _DECODERS[encoding](str(body).encode("ascii", "replace"))
        except ValueError:  # binascii.Error: not base64 after all
            return []
        return [message_from_bytes(raw, policy=policy.compat32)]
    return [child for child in payload if isinstance(child, Message)]


def _refuse_other_reports(part: Message) -> None:
    content_type = part.get_content_type()
    report_type = str(part.get_param("report-type", "") or "").lower()
    if content_type in _FAILURE_TYPES or report_type == "feedback-report" or part.get("Feedback-Type"):
        raise InvalidReport(FAILURE_REPORT, "this is a DMARC failure (forensic, RFC 6591) report, "
                            "not an aggregate report")
    if content_type in _TLS_TYPES or report_type == "tlsrpt" or part.get("TLS-Report-Domain"):
        raise InvalidReport(TLS_REPORT, "this is an SMTP TLS report (RFC 8460), not a DMARC aggregate report")


def _is_report_part(part: Message) -> bool:
    if part.is_multipart() or part.get_content_maintype() == "message":
        return False
    name = part.get_filename() or ""
    return part.get_content_type() in _REPORT_TYPES or bool(_REPORT_NAME.search(name))
