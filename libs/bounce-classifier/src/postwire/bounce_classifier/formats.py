"""Non-standard bounce formats: the human-readable notices of Exim, qmail, Postfix without DSN,
Sendmail, Exchange/Office 365, Gmail, Yahoo, Courier, Domino, mail.ru, Japanese carriers, …

Rather than one parser per MTA, one scanner that knows the shapes they share:

* a notification text, ended by a marker that introduces the returned original message
  ("------ This is a copy of the message", "--- Below this line is a copy of the message.",
  "----- Original message -----", "Original message headers:", "------- Returned Message --------", …);
* inside it, each failed recipient on a line of its own or introduced by a phrase ("RCPT TO:<x>",
  "<x>:", "Could not be delivered to: <x>", "x on <date>", "x<mailto:x>"), followed by its error text;
* addresses that are not recipients (MAILER-DAEMON, postmaster, the bounce's own addressee, i.e. the
  original sender, and header lines quoted from the original) are ignored.

Amazon SES' JSON notifications via SNS are handled here too (`ses_json_records`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from email.message import Message

from postwire.bounce_classifier.message_fields import addresses, extract_addresses, header, is_service_address

# Lines after which the text is the returned message, not the notification.
_ORIGINAL_MARKERS = re.compile(
    r"^\s*(?:"
    r"-+\s*(?:this is a copy of|below this line is a copy|original message|the (?:original )?"
    r"(?:message|header)s? (?:of the original|follows|was)|returned message|unsent message|undelivered "
    r"message|message (?:text|headers?) follows|original (?:mail|e-?mail|headers?))"
    r"|-+\s*the header of the original message"
    r"|original message (?:headers|follows)\b"
    r"|--- ?below this line"
    r"|-{3,}\s*original message"
    r"|content-type:\s*message/rfc822"
    r"|\[?original message (?:headers|text)"
    r"|the (?:original|attached) message (?:headers? )?(?:follows|is attached)"
    r"|-+ ?(?:original|returned) (?:mail|message) (?:headers|text)"
    r"|-{5,}\s*$"
    r"|_{5,}\s*$"
    r"|return-path:\s*<"
    r"|received: from\s"
    r")",
    re.IGNORECASE,
)
# Header-like lines quoted from the original message: their addresses are not recipients.
_QUOTED_HEADER = re.compile(
    r"^\s*(?:>\s*)?(?:from|sender|reply-to|return-path|message-id|in-reply-to|references|date|subject|"
    r"sent|envelope-from|errors-to|mail from|x-[\w-]+)\s*:", re.IGNORECASE)
_BOUNCE_SENDER = re.compile(
    r"mailer-?daemon|postmaster|post_master|mail delivery|delivery subsystem|mail\.delivery|"
    r"returned mail|mail administrator|mdaemon|ndr administrator|mail system|interscan", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status|failure|failed|has failed|notification|problem)|"
    r"returned mail|mail delivery|failure notice|failed delivery|failure delivery|could not be delivered|"
    r"not delivered|non-?delivery|mail (?:system )?error|delivery failed|warning: message|delayed|"
    r"not member|loop alert|mail failure|error sending|returning message|配信|エラー|不達|не доставлено",
    re.IGNORECASE)

_FAILURE_NOTICE = re.compile(
    r"could not be delivered|undeliverable|delivery (?:has )?failed|permanent error|unable to deliver|"
    r"not (?:be )?delivered|送信できませんでした|配信できません", re.IGNORECASE)


@dataclass(slots=True)
class TextRecord:
    """A recipient found in a notification text and the text that describes its failure."""

    recipient: str
    diagnostic: str
    status: str | None = None
    action: str | None = None
    remote_mta: str | None = None


def looks_like_bounce(msg: Message, notice: str = "", has_original: bool = False) -> bool:
    """A mail with no report part is a bounce only if its sender or subject says so, or if it returns
    an original message with a notice that says it could not be delivered."""
    if msg.get("X-Failed-Recipients"):
        return True
    sender = f"{header(msg, 'From')} {msg.get('Return-Path', '')}"
    if _BOUNCE_SENDER.search(sender) or _BOUNCE_SUBJECT.search(header(msg, "Subject")):
        return True
    return has_original and bool(_FAILURE_NOTICE.search(notice))


def notification_text(text: str) -> str:
    """The notification part of a body: everything before the returned original message."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i > 0 and _ORIGINAL_MARKERS.match(line) and _has_address(lines[:i]):
            if _SEPARATOR.match(line) and _recipient_follows(lines, i + 1):
                continue  # a rule drawn above the per-recipient errors (Postfix templates), not the end
            return "\n".join(lines[:i])
    return text


_SEPARATOR = re.compile(r"^\s*(?:-{5,}|_{5,})\s*$")


def _recipient_follows(lines: list[str], start: int) -> bool:
    """Whether the next non-blank line names a recipient by its layout ("<addr>: …", the address alone)."""
    nxt = next((line for line in lines[start:] if line.strip()), "")
    m = _RECIPIENT_SHAPE.search(nxt)
    return m is not None and bool(m.group("a") or m.group("b"))


def _has_address(lines: list[str]) -> bool:
    return any("@" in line for line in lines)


def text_records(msg: Message, notice: str, also: list[str] | None = None) -> list[TextRecord]:
    """Recipients and their error texts from a notification, in the order the notice lists them.

    `also`: addresses known (from a DSN) to be recipients, kept even if they look like a service
    address or the bounce's own addressee.
    """
    allowed = {a.lower() for a in also or []}
    excluded = {a.lower() for a in addresses(header(msg, "To"))}
    excluded |= {a.lower() for a in addresses(header(msg, "From"))}
    excluded -= allowed
    failed = [a for a in addresses(msg.get("X-Failed-Recipients", "")) if "@" in a]
    lines = notice.splitlines()
    firsts = _first_lines(lines, excluded, allowed)
    if not firsts and not failed:
        # a mail bounced back to its own sender (or to postmaster): the scanner skipped the address as
        # "the bounce's addressee" / "a service address"; where the notice's layout names it as the
        # failed recipient, it is one after all
        sender = {a.lower() for a in addresses(header(msg, "From"))}
        firsts = _recipient_lines(lines, sender)
    if failed:
        known = {a.lower() for a in failed}
        firsts = [(i, a) for i, a in firsts if a.lower() in known] or _lines_for(lines, failed)
    records: list[TextRecord] = []
    for n, (start, addr) in enumerate(firsts):
        end = firsts[n + 1][0] if n + 1 < len(firsts) else len(lines)
        end = _indented_block_end(lines, start, end)
        block = "\n".join(lines[start:end])
        records.append(TextRecord(addr, block, remote_mta=_remote_mta(block)))
    return records


_INDENTED_ADDRESS = re.compile(r"^(\s+)<?[^\s<>@]+@[^\s<>]+>?:?\s*$")


def _indented_block_end(lines: list[str], start: int, end: int) -> int:
    """Exim and its kin indent the address and, deeper, its error lines: the block ends at the first
    blank or less indented line, before whatever text follows the list."""
    m = _INDENTED_ADDRESS.match(lines[start])
    if m is None:
        return end
    depth = len(m.group(1).expandtabs())
    for i in range(start + 1, end):
        line = lines[i]
        if not line.strip() or (len(line) - len(line.lstrip()) <= depth and i > start + 1):
            return i
    return end


def _first_lines(lines: list[str], excluded: set[str],
                 allowed: AbstractSet[str] = frozenset()) -> list[tuple[int, str]]:
    """(line index, address) of each candidate recipient's first mention."""
    seen: set[str] = set()
    out: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if _QUOTED_HEADER.match(line):
            continue
        for addr in _line_addresses(line):
            key = addr.lower()
            service = is_service_address(addr) and key not in allowed
            if key in seen or key in excluded or service:
                continue
            if _not_a_mailbox(line, addr):
                seen.add(key)  # a contact address or an id stays one wherever else it appears
                continue
            seen.add(key)
            out.append((i, addr))
    return out


_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"
# Lines that name a failed recipient by their layout alone: the address alone on its line (Exim,
# Sendmail, qmail lists), "<addr>: error" (Postfix, qmail, OpenSMTPD), "delivering your mail to <addr>".
_RECIPIENT_SHAPE = re.compile(
    rf"^\s*<?(?P<a>{_ADDR})>?:?\s*$|^\s*<?(?P<b>{_ADDR})>?:\s+\S"
    rf"|\bdeliver(?:ing|y of)?\s+(?:your\s+)?(?:mail|message|e-?mail)\s+to\s+<?(?P<c>{_ADDR})>?",
    re.IGNORECASE)


# "display <addr>: error" (Exim's bad-address list, Postfix's "<addr>: host … said"): the bracketed
# address before the colon is the recipient, whatever else the line names.
_BRACKETED_HEAD = re.compile(rf"^\s*(?:[^<>:]*\s)?<(?P<addr>{_ADDR})>:\s")


def _line_addresses(line: str) -> list[str]:
    m = _BRACKETED_HEAD.match(line)
    return [m.group("addr")] if m else extract_addresses(line)


def _recipient_lines(lines: list[str], skipped: set[str]) -> list[tuple[int, str]]:
    """(line index, address) of addresses that the layout presents as recipients, first mention each."""
    seen: set[str] = set()
    out: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = _RECIPIENT_SHAPE.search(line)
        if m is None or _QUOTED_HEADER.match(line):
            continue
        addr = next(g for g in m.groups() if g)
        if addr.lower() not in seen and addr.lower() not in skipped:
            seen.add(addr.lower())
            out.append((i, addr))
    return out


def _not_a_mailbox(line: str, addr: str) -> bool:
    """Message-ids and ids in Received lines look like addresses but are not recipients."""
    local = addr.split("@", 1)[0]
    lowered = line.lower()
    if re.search(r"(?:message-?id|\bid|\bcontact)\s*[:=]?\s*<?" + re.escape(addr.lower()), lowered):
        return True
    return bool(re.fullmatch(r"[0-9A-Fa-f.\-$]{16,}", local))


def _lines_for(lines: list[str], recipients: list[str]) -> list[tuple[int, str]]:
    """Block starts for recipients named only in X-Failed-Recipients: their first mention, else line 0."""
    out: list[tuple[int, str]] = []
    for addr in recipients:
        idx = next((i for i, line in enumerate(lines) if addr.lower() in line.lower()), 0)
        out.append((idx, addr))
    return sorted(out, key=lambda t: t[0])


_REMOTE_RE = re.compile(
    r"(?:host|server|remote host|mx)\s+\[?([A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z]{2,})\]?"
    r"(?:\s*\[[0-9.:a-fA-F]+\])?\s*(?:said|says|returned|:|refused|\[)", re.IGNORECASE)


def _remote_mta(block: str) -> str | None:
    m = _REMOTE_RE.search(block)
    return m.group(1) if m else None


def ses_json_records(text: str) -> list[TextRecord] | None:
    """Amazon SES notifications delivered by SNS email: a JSON document instead of a DSN."""
    start = text.find("{")
    if start < 0 or ('"notificationType"' not in text and '"eventType"' not in text):
        return None
    try:
        # SNS wraps long lines of the JSON document: undo that before decoding
        doc, _ = json.JSONDecoder(strict=False).raw_decode(text[start:].replace("\r", "").replace("\n", ""))
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    kind = str(doc.get("notificationType") or doc.get("eventType") or "")
    if kind == "Bounce":
        return _ses_bounce(doc.get("bounce") or {})
    if kind == "Delivery":
        delivery = doc.get("delivery") or {}
        return [TextRecord(r, str(delivery.get("smtpResponse", "")), "2.0.0", "delivered")
                for r in delivery.get("recipients", []) if isinstance(r, str)]
    return None


def _ses_bounce(bounce: dict[str, object]) -> list[TextRecord]:
    out: list[TextRecord] = []
    rcpts = bounce.get("bouncedRecipients")
    for r in rcpts if isinstance(rcpts, list) else []:
        if not isinstance(r, dict) or not r.get("emailAddress"):
            continue
        diag = str(r.get("diagnosticCode") or "")
        diag = diag.split(";", 1)[1].strip() if diag.lower().startswith("smtp;") else diag
        if not diag:
            diag = f"{bounce.get('bounceType', '')} {bounce.get('bounceSubType', '')}"
        out.append(TextRecord(str(r["emailAddress"]), diag, r.get("status") and str(r["status"]),
                              r.get("action") and str(r["action"])))
    return out
