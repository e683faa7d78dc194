"""`parse_bounce`: one raw mail in, one result per bounced recipient out.

The shapes are tried from most to least structured, and the first that yields recipients wins:
ARF complaint → RFC 3464 delivery-status (in its own part or as fields in a text part) → Amazon SES
JSON → a human-readable notice of a known shape (`formats`) → RFC 3834 auto-reply. A mail that fits
none is not a bounce and yields [].
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from email.message import Message

import structlog

from postwire.bounce_classifier.arf import parse_feedback
from postwire.bounce_classifier.autoreply import auto_reply_sender
from postwire.bounce_classifier.classify import (
    Confidence,
    classify_reply,
    find_command,
    find_replycode,
    find_status,
    is_hardbounce,
)
from postwire.bounce_classifier.delivery_status import DeliveryReport, RecipientStatus, parse_delivery_status
from postwire.bounce_classifier.formats import (
    TextRecord,
    looks_like_bounce,
    notification_text,
    ses_json_records,
    text_records,
)
from postwire.bounce_classifier.message_fields import (
    addresses,
    content_type,
    header,
    load,
    original_headers,
    part_text,
    walk_leaves,
)
from postwire.bounce_classifier.providers import provider_reason
from postwire.bounce_classifier.rules import match_text, names_reason

log = structlog.get_logger(__name__)

_REPORT_TYPES = ("message/delivery-status", "message/global-delivery-status")
_TAG_RE = re.compile(r"<[^>]+>")
_DSN_FIELDS_RE = re.compile(r"^[\s>]*(?:final|original)-recipient\s*:", re.IGNORECASE | re.MULTILINE)
_QUOTE_RE = re.compile(r"^(?:> ?)+", re.MULTILINE)  # a forwarded bounce: "> Final-Recipient: ..."


@dataclass(frozen=True, slots=True)
class BounceResult:
    """One bounced (or delayed, delivered, complained, auto-replied) recipient of a report mail."""

    recipient: str | None
    reason: str
    status: str | None
    replycode: int | None
    hardbounce: bool
    diagnostic: str = ""
    feedbacktype: str | None = None
    remote_mta: str | None = None
    action: str | None = None
    # how sure the reason is: high (a provider code, or a precise status the text agrees with), medium
    # (a precise status or a precise phrase alone), low (generic words, the stage, a bare reply code)
    confidence: Confidence = "low"


def parse_bounce(raw: bytes) -> list[BounceResult]:
    """Every recipient a report mail is about, in mail order; [] for a mail that is not a bounce.

    Never raises: bounce input is hostile or broken often enough that one bad mail must not stop a
    consumer. The failure is logged with its type so it can be investigated.
    """
    try:
        return [r for one in _mbox_messages(raw) for r in parse_message(load(one))]
    except Exception as exc:  # any parser failure means "not understood", never a crash
        log.warning("bounce.parse_failed", error=type(exc).__name__, detail=str(exc)[:200])
        return []


# An mbox "From " separator line after a blank line: the file holds further mails (a mailbox export).
_MBOX_FROM = re.compile(rb"\n\r?\n(?=From \S+ +[A-Z][a-z]{2} [A-Z][a-z]{2} +\d{1,2} \d\d:\d\d)")


def _mbox_messages(raw: bytes) -> list[bytes]:
    """The mails of a raw input: one, or each mail of an mbox that holds several bounces."""
    parts = _MBOX_FROM.split(raw)
    return [parts[0], *(p.split(b"\n", 1)[1] if b"\n" in p else b"" for p in parts[1:])]


def parse_message(msg: Message, *, depth: int = 0) -> list[BounceResult]:
    """`parse_bounce` for an already parsed message."""
    feedback = parse_feedback(msg)
    if feedback is not None:
        return [BounceResult(f.recipient, "feedback", None, None, False, feedbacktype=f.feedbacktype,
                             confidence="high") for f in feedback]
    leaves = walk_leaves(msg)
    human = _human_text(leaves)
    report = _delivery_report(leaves, human)
    nested = _nested_reports(leaves, depth)
    if report.recipients:
        blocks = _blocks_by_recipient(msg, human, [r.recipient or "" for r in report.recipients])
        notice = notification_text(human)
        results = [_from_dsn(r, blocks, notice) for r in report.recipients]
        named = {(r.recipient or "").lower() for r in results}
        return results + [r for r in nested if (r.recipient or "").lower() not in named]
    if nested:
        return nested
    ses = ses_json_records(human)
    if ses:
        return [_from_text(r, r.diagnostic) for r in ses]
    notice = notification_text(human)
    original = original_headers(msg)
    if looks_like_bounce(msg, notice, original is not None):
        records = text_records(msg, notice) or _original_recipient(original, notice)
        # a bounce, even if its recipient is unknown
        return [_from_text(r, notice) for r in records]
    sender = auto_reply_sender(msg, human)
    if sender is not None:
        return [BounceResult(sender, "vacation", None, None, False, confidence="medium")]
    return []


def _nested_reports(leaves: list[Message], depth: int) -> list[BounceResult]:
    """Delivery reports attached as message/rfc822 (a relay forwarding the report it received, or a
    digest of reports): each attached report's own recipients, one level deep."""
    if depth > 0:
        return []
    out: list[BounceResult] = []
    for part in leaves:
        inner = part.get_payload() if content_type(part) == "message/rfc822" else None
        if not isinstance(inner, list) or not inner or not isinstance(inner[0], Message):
            continue
        sub = inner[0]
        if any(content_type(p) in _REPORT_TYPES for p in walk_leaves(sub)):
            out.extend(parse_message(sub, depth=depth + 1))
    return out


def _original_recipient(original: Message | None, notice: str) -> list[TextRecord]:
    """A notice that names no address is about the returned message's recipient (its To: header)."""
    if original is None:
        return []
    found = addresses(header(original, "To"))
    return [TextRecord(found[0], notice)] if found else []


def _human_text(leaves: list[Message]) -> str:
    """The readable parts (text/plain; text/html with tags stripped when there is no plain text).

    A multipart whose boundary never occurs is left as one unparsed leaf: its text is read as is.
    """
    plain = [part_text(p) for p in leaves
             if content_type(p) == "text/plain"
             or (p.get_content_maintype() == "multipart" and isinstance(p.get_payload(), str))]
    if plain:
        return "\n".join(plain)
    html = [part_text(p) for p in leaves if content_type(p) == "text/html"]
    return "\n".join(_TAG_RE.sub(" ", h) for h in html)


def _delivery_report(leaves: list[Message], human: str) -> DeliveryReport:
    """All message/delivery-status parts merged; DSN fields in a text part when there is no such part."""
    merged = DeliveryReport()
    for part in leaves:
        if content_type(part) in _REPORT_TYPES:
            report = parse_delivery_status(part_text(part))
            merged.reporting_mta = merged.reporting_mta or report.reporting_mta
            merged.recipients.extend(report.recipients)
    if not merged.recipients and _DSN_FIELDS_RE.search(human):
        return parse_delivery_status(_QUOTE_RE.sub("", human))
    return merged


def _blocks_by_recipient(msg: Message, human: str, recipients: list[str]) -> dict[str, str]:
    """The human-readable error text per recipient, used when the DSN's Diagnostic-Code says little.

    The DSN names the recipients, so the notice's mentions of them count even where the scanner would
    otherwise skip the address (postmaster@…, or the bounce's own addressee).
    """
    notice = notification_text(human)
    blocks = {r.recipient.lower(): r.diagnostic for r in text_records(msg, notice, also=recipients)}
    if len(recipients) == 1 and len(blocks) == 1 and recipients[0].lower() not in blocks:
        # one failed recipient in the report, one in the notice, under another name (an alias the
        # reporting MTA expanded, or the original address): the notice describes the same failure
        return {recipients[0].lower(): next(iter(blocks.values()))}
    return blocks


def _from_dsn(rec: RecipientStatus, blocks: dict[str, str], notice: str) -> BounceResult:
    recipient = rec.recipient or ""
    diagnostic = rec.diagnostic
    block = blocks.get(recipient.lower(), "")
    # the notice joins the diagnostic when the diagnostic says nothing known, or when the notice is in a
    # provider's own words (Google's "the address couldn't be found. Check for typos"), more precise than
    # the reply it relays
    known = match_text(diagnostic) and provider_reason(block) is None
    text = diagnostic if known else f"{diagnostic}\n{block}".strip()
    status = _best_status(rec.status, diagnostic or block)
    result = _result(recipient, text, status, rec.action, rec.remote_mta, diagnostic or block,
                     find_command(block) or find_command(diagnostic))
    if _expired_report(rec, result, notice):
        result = replace(result, reason="expired", hardbounce=False, confidence="medium")
    if rec.diagnostic_type == "x-unix" and result.reason not in ("mailboxfull", "delivered"):
        # the local delivery agent (procmail, a pipe) failed: that is the MTA's problem, not the address
        return replace(result, reason="mailererror", hardbounce=False, confidence="medium")
    return result


def _from_text(rec: TextRecord, notice: str) -> BounceResult:
    text = rec.diagnostic if match_text(rec.diagnostic) else f"{rec.diagnostic}\n{notice}"
    status = _best_status(rec.status, rec.diagnostic)
    return _result(rec.recipient, text, status, rec.action, rec.remote_mta, rec.diagnostic,
                   find_command(rec.diagnostic))


def _best_status(field: str | None, diagnostic: str) -> str | None:
    """The status in the diagnostic text, else the Status field.

    The remote server's own code (in the diagnostic) is more precise than the one the reporting MTA
    derived from it: Sendmail reports 4.4.7 "expired" for a message refused with 4.7.1 every time.
    """
    in_text = find_status(diagnostic)
    if in_text is not None:
        return in_text
    if field is None or not re.match(r"^[245]\.\d{1,3}\.\d{1,3}$", field):
        return None
    return field


# Lines of an SMTP session transcript that are not the failure: what the client sent (Postfix's
# "In: EHLO …", Sendmail's ">>> DATA") and the server's positive replies ("Out: 250-STARTTLS", "<<< 250 ok").
_TRANSCRIPT_NOISE = re.compile(r"^[ \t]*(?:in:|>>>)[ \t].*$|^[ \t]*(?:out:|<<<)[ \t]*[23]\d\d\b.*$",
                               re.IGNORECASE | re.MULTILINE)


def _failure_lines(text: str) -> str:
    """The text without the transcript lines that only show the session going well."""
    return _TRANSCRIPT_NOISE.sub("", text)


def _result(recipient: str, text: str, status: str | None, action: str | None, remote_mta: str | None,
            diagnostic: str, command: str | None) -> BounceResult:
    code = find_replycode(diagnostic) if diagnostic else None
    if action == "delivered" or (action == "relayed" and not status):
        status = status or "2.0.0"
    verdict = classify_reply(code, status, _failure_lines(text), command=command)
    # the status the mail itself carried is what a consumer should see, even a vague "5.0.0": the
    # classifier's refinement of it is a guess from the reason (kept when the mail carried no status)
    reported = status if status and status.endswith(".0.0") and status[0] in "45" else verdict.status
    reason, confidence = verdict.reason, verdict.confidence
    if confidence == "low" and _gave_up_retrying(action, reported, reason):
        reason, confidence = "expired", "medium"
    hard = is_hardbounce(reason, reported, verdict.replycode)
    return BounceResult(recipient, reason, reported, verdict.replycode, hard,
                        diagnostic=" ".join(diagnostic.split())[:1000], remote_mta=remote_mta, action=action,
                        confidence=confidence)


# Reasons that only say a delivery attempt failed for now: in a report whose Status is X.4.7 ("delivery
# time expired", RFC 3463), the retries are what ended, so the report is about the expiry.
_TRANSIENT_CAUSES = frozenset({"onhold", "networkerror", "systemerror"})
_RETRY_TIMEOUT = re.compile(r"^[45]\.4\.7$")


def _expired_report(rec: RecipientStatus, result: BounceResult, notice: str) -> bool:
    """RFC 3464 structure that says the retries ran out, where the diagnostic names no precise cause.

    - the reporting MTA's own Status is X.4.7 (Action failed or delayed), and the remote reply it
      quotes was only a transient failure (a timeout, a "try again later", a temporary local error)
      or nothing at all: the MTA gave up because time ran out, whatever the last attempt said;
    - nothing at all was found for the recipient, but the notice says the message expired ("could
      not be delivered for 5 days", "retry time exceeded"): that is the cause, not "too little
      information" (onhold).
    A precise cause (a block list, too many connections, no such user) keeps its reason.
    """
    retry_timeout = rec.action in ("failed", "delayed") and bool(_RETRY_TIMEOUT.match(rec.status or ""))
    if retry_timeout and (result.confidence == "low" or result.reason in _TRANSIENT_CAUSES):
        return True
    return result.reason == "onhold" and names_reason(notice, "expired")


def _gave_up_retrying(action: str | None, status: str | None, reason: str) -> bool:
    """A report that a message is delayed (RFC 3464 Action: delayed), or one that failed with a temporary
    status and no cause at all (failed, 4.x.x): the MTA kept retrying and then gave up or is about to.
    That is the reason (expired), rather than a guess from generic words or the reply code; a failure
    whose reply code still says something (451 local error) keeps it."""
    if action == "delayed":
        return True
    return action == "failed" and reason == "onhold" and bool(status) and str(status).startswith("4.")
