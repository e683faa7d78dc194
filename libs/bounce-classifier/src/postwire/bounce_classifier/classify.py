"""Map one SMTP reply / DSN diagnostic to a Sisimai-vocabulary reason and a hard/soft verdict.

`classify_reply` is a pure function: the bounce parser calls it once per bounced recipient, and the
dispatcher calls it for its own synchronous SMTP rejections, so both paths agree on what a reply means.

The decision is layered, strongest evidence first; each layer also says how sure it is (`confidence`):

1. a provider's own documented error code (`providers.py`): high;
2. a precise enhanced status code (RFC 3463 and the IANA registry: 5.1.1, 5.2.2, 4.4.7, 5.7.26, ...),
   which only a few precise phrases ("mailbox full", "listed at spamhaus") override, because MTAs do
   pick generic codes for precise reasons: high when the text agrees, else medium;
3. precise phrases in the text (`rules.match_text`): medium, high when the status agrees;
4. the rest of the status as a hint; a vague one (X.0.0-like, X.7.0, X.7.1: "refused", for any
   reason) is resolved by generic words in the text (`rules.match_weak`: "policy", "blocked",
   "sender", "try again later"): medium for a hint alone, low when generic words decided;
5. generic words alone, the SMTP stage (refused right after connecting: blocked), the bare reply code
   (only says temporary or permanent, RFC 5321 4.2): low; nothing at all: onhold, low.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from postwire.bounce_classifier.providers import provider_reason
from postwire.bounce_classifier.rules import match_text, match_weak, names_recipient_choice

Confidence = Literal["high", "medium", "low"]
HIGH: Confidence = "high"
MEDIUM: Confidence = "medium"
LOW: Confidence = "low"

# Reasons that make an address undeliverable for good (REASONS.md: "Hard bounce").
HARD_REASONS = frozenset({"userunknown", "hostunknown", "hasmoved"})
# Results that are not failures at all: never hard, never soft.
NOT_FAILURES = frozenset({"delivered", "feedback", "vacation"})

_STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLIED_STATUS_RE = re.compile(r"\b[245]\d\d[ \-'\":]{1,3}([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_REPLY_RE = re.compile(r"(?<![\d.\-#])([245][0-7]\d)(?:[ \-\r\n]|$)(?![\d.]*%)")

# Enhanced status "subject.detail" → reason, for codes that mean one thing whatever the class.
_STATUS_REASONS: dict[str, str] = {
    "1.0": "userunknown", "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown",
    "1.4": "userunknown", "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected", "1.9": "rejected",
    "1.10": "notaccept",
    "2.0": "mailboxfull", "2.1": "suspend", "2.2": "mailboxfull", "2.3": "exceedlimit", "2.4": "systemerror",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror",
    "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "networkerror", "4.2": "networkerror", "4.3": "systemerror",
    "4.4": "hostunknown", "4.5": "toomanyconn", "4.6": "networkerror", "4.7": "expired",
    "5.0": "syntaxerror", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "exceedlimit",
    "5.4": "syntaxerror", "5.5": "syntaxerror", "5.6": "contenterror",
    "6.0": "contenterror", "6.1": "contenterror", "6.2": "contenterror", "6.3": "contenterror",
    "6.4": "contenterror", "6.5": "contenterror", "6.6": "contenterror", "6.7": "contenterror",
    "6.8": "contenterror", "6.9": "contenterror", "6.10": "contenterror",
    "7.0": "securityerror", "7.1": "rejected", "7.2": "securityerror", "7.3": "securityerror",
    "7.4": "securityerror", "7.5": "securityerror", "7.6": "securityerror", "7.7": "securityerror",
    "7.8": "securityerror", "7.9": "securityerror", "7.10": "failedstarttls", "7.11": "failedstarttls",
    "7.12": "securityerror", "7.13": "suspend", "7.14": "securityerror", "7.15": "policyviolation",
    "7.16": "mesgtoobig", "7.17": "hasmoved", "7.18": "hasmoved", "7.19": "hasmoved",
    "7.20": "authfailure", "7.21": "authfailure", "7.22": "authfailure", "7.23": "authfailure",
    "7.24": "authfailure", "7.25": "requireptr", "7.26": "authfailure", "7.27": "notaccept",
    "7.28": "spamdetected", "7.29": "authfailure", "7.30": "failedstarttls",
}
# Codes that name one precise condition: they win over phrases in the text. Every other code is a
# hint only (X.0.0, X.5.0 and X.7.1 are used by some MTAs for almost anything).
_STRONG_STATUS = frozenset({
    "1.1", "1.2", "1.3", "1.6", "1.7", "1.8", "1.10", "2.2", "2.3", "3.1", "3.4", "4.4", "4.5", "4.7",
    "6.0", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "7.13", "7.17", "7.18", "7.20", "7.21",
    "7.22", "7.23", "7.24", "7.25", "7.26", "7.29",
})
# X.7.27 (RFC 7505: the sender's domain has a null MX) is left out: Gmail documents 4.7.27/5.7.27 for
# SPF failures, so the text decides and the code is a hint. So is X.7.30 (RFC 8689: REQUIRETLS support
# required), which Gmail documents as 4.7.30/5.7.30 for mail whose DKIM check did not pass.
# Phrases that outrank even a precise status: the remote MTA picked a generic code for a precise reason.
_OVERRIDING = frozenset({"speeding", "toomanyconn", "virusdetected", "notcompliantrfc", "mailboxfull",
                         "suspend", "userunknown", "failedstarttls", "notaccept", "spamdetected", "blocked",
                         "systemfull"})
# Statuses that say almost nothing ("other address status", "delivery not authorized"): generic words
# in the text, when there are any, decide between their possible meanings.
_VAGUE_STATUS = frozenset({"1.0", "2.0", "3.0", "4.0", "5.0", "7.0", "7.1"})
# Reasons a refusal right after connecting (or at HELO) resolves to "blocked": at that stage the only
# thing the server has judged is the client itself (REASONS.md: blocked = connection/HELO level).
_VAGUE_AT_CONNECT = frozenset({"onhold", "systemerror", "securityerror", "rejected", "syntaxerror",
                               "userunknown", "policyviolation"})
# ... except these, which no phrase can override: they name who or what is wrong exactly.
_ABSOLUTE_STATUS = frozenset({"1.6", "1.7", "1.8", "2.3", "7.13", "7.17", "7.18"})
# A recipient refused only once the content was seen (after DATA) was refused by a content filter.
_AFTER_DATA = re.compile(r"after end of data|end of data command|after data\b|"
                         r"in reply to (?:end of )?data|after the data command", re.IGNORECASE)
_COMMAND_RE = re.compile(
    # a notice wraps its lines anywhere: "(in reply to\n    RCPT TO command)"
    r"in\s+reply\s+to\s+(?:end\s+of\s+)?(?P<a>data|rcpt\s+to|mail\s+from|helo|ehlo)\b"
    # Exim: "after RCPT TO:<x>", "after pipelined RCPT TO:<x>" (a command sent in a PIPELINING batch)
    r"|after\s+(?:pipelined\s+)?(?:end\s+of\s+)?"
    r"(?P<b>data|rcpt\s+to|mail\s+from|initial\s+connection|helo|ehlo)\b"
    r"|^\W*>>> (?P<c>data|rcpt to|mail from|helo|ehlo)\b"
    r"|did not like our (?P<d>rcpt to|mail from|data)\b"
    r"|\[(?P<e>rcpt_to|mail_from|data)\]"
    r"|(?P<f>rcpt to|mail from|data) response\b"
    r"|smtp command:?\s+(?P<g>data|rcpt|mail|helo|ehlo)\b"  # m-FILTER: "SMTP command", the command below it
    r"|smtp:(?P<h>rcpt|mail|data)\b"  # "Technical details: SMTP:RCPT host …"
    r"|does not like (?P<i>recipient)\b"  # qmail-remote: "… does not like recipient."
    # qmail-remote's other stages: "Connected to x but greeting failed." / "… but my name was rejected."
    # / "… but sender was rejected." / "… failed on DATA command." / "… failed after I sent the message."
    r"|but (?P<m>greeting) failed\b|but my name was (?P<n>rejected)\b|but (?P<o>sender) was rejected\b"
    r"|failed on (?P<p>data) command\b|failed after i (?P<q>sent the message)\b"
    r"|(?P<j>refused to talk to me)\b"  # Postfix: the greeting itself was a refusal
    r"|(?P<k>greeting)\b(?! (?:was|is) (?:ok|accepted))"  # "… while receiving the initial server greeting"
    # a Sendmail transcript whose first line from the server is the failure: no command was sent yet
    r"|while talking to \S+:[ \t]*\n[ \t]*(?P<l><<<)[ \t]+[45]\d\d\b",
    re.IGNORECASE | re.MULTILINE)
_COMMANDS = {"data": "DATA", "rcpt to": "RCPT", "rcpt_to": "RCPT", "mail from": "MAIL", "mail_from": "MAIL",
             "rcpt": "RCPT", "recipient": "RCPT", "mail": "MAIL",
             "initial connection": "CONN", "refused to talk to me": "CONN", "greeting": "CONN", "<<<": "CONN",
             "helo": "HELO", "ehlo": "HELO", "rejected": "HELO", "sender": "MAIL", "sent the message": "DATA"}
_TEMPORARY_DNS = frozenset({"hostunknown"})
_TEMPORARY_WORDS = re.compile(r"temporar|try\s+again\s+later|not\s+found,\s+try\s+again", re.IGNORECASE)
# qmail's give-up sentence, appended to whatever the real failure was ("Unable to contact LDAP server.
# (#4.4.3) I'm not going to try again; this message has been in the queue too long."): the cause wins.
_GIVE_UP = re.compile(r"i'm\s+not\s+going\s+to\s+try\s+again;\s+this\s+message\s+has\s+been\s+in\s+"
                      r"the\s+queue\s+too\s+long\.?", re.IGNORECASE)

# Reply codes whose meaning is narrow enough to use when nothing else matched (RFC 5321 §4.2.3).
_REPLY_REASONS: dict[int, str] = {
    421: "blocked", 451: "systemerror", 452: "mailboxfull",
    500: "syntaxerror", 501: "syntaxerror", 502: "syntaxerror", 503: "syntaxerror", 504: "syntaxerror",
    550: "userunknown", 551: "hasmoved", 552: "mailboxfull", 553: "userunknown", 554: "onhold",
}
# Synthetic status for a reason when the mail carried none (only the class digit is meaningful).
_REASON_STATUS: dict[str, str] = {
    "userunknown": "1.1", "hostunknown": "1.2", "hasmoved": "1.6", "notaccept": "1.10",
    "mailboxfull": "2.2", "suspend": "2.1", "exceedlimit": "2.3", "mesgtoobig": "3.4",
    "systemfull": "3.1", "systemerror": "3.0", "mailererror": "3.0", "networkerror": "4.0",
    "expired": "4.7", "toomanyconn": "4.5", "speeding": "7.0", "syntaxerror": "5.2",
    "contenterror": "6.0", "notcompliantrfc": "6.0", "securityerror": "7.0", "authfailure": "7.26",
    "requireptr": "7.25", "failedstarttls": "7.10", "delivered": "0.0",
}


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one failure: Sisimai reason, hard bounce or not, RFC 3463 status, SMTP code."""

    reason: str
    hardbounce: bool
    status: str | None
    replycode: int | None
    # which evidence decided (module docstring); not part of equality: it qualifies the verdict
    confidence: Confidence = field(default=LOW, compare=False)


def find_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code in free text ("... 550 5.1.1 <x>: unknown").

    One that directly follows a reply code ("550 5.7.1", "550-5.7.1") is preferred: relays often
    prefix their own generic code to the remote server's precise one.
    """
    for pattern in (_REPLIED_STATUS_RE, _STATUS_RE):
        found = [f"{m.group(1)}.{m.group(2)}.{m.group(3)}" for m in pattern.finditer(text)]
        if found:
            # a session transcript ("250 2.1.5 Ok … 451 4.3.0 queue file write error"): the failure counts
            return next((s for s in found if not s.startswith("2.")), found[0])
    return None


def find_replycode(text: str) -> int | None:
    """The first three-digit SMTP reply code that starts a line, a sentence or follows "said:"."""
    found: list[int] = []
    for m in _REPLY_RE.finditer(text):
        before = text[max(0, m.start() - 12):m.start()].lower()
        if m.start() == 0 or before.endswith(("\n", " ", ":", "'", '"', "(", "<", "[", ";", "=")):
            if re.search(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.$", before):  # a dotted IP address, not a code
                continue
            if m.group(0)[-1:] in "\r\n" and not re.search(r"(?:[a-z]:|<<<)\s*$", before):
                # a number ending a line is a code only where a reply is introduced ("said: 550",
                # "<<< 421"), not a count ("Size (in bytes): 222")
                continue
            found.append(int(m.group(1)))
    # the first code, unless it is a success that a later failure in the same transcript followed
    return next((c for c in found if c >= 400), found[0]) if found else None


def find_command(text: str) -> str | None:
    """The SMTP command a rejection answered, from MTA wording ("in reply to end of DATA command",
    "after RCPT TO", a Sendmail transcript's ">>> DATA"); the last one mentioned wins."""
    found = None
    for m in _COMMAND_RE.finditer(text):
        word = " ".join(next(g for g in m.groups() if g).lower().split())
        found = _COMMANDS.get(word, found)
    return found


def is_hardbounce(reason: str, status: str | None, replycode: int | None) -> bool:
    """REASONS.md: userunknown/hostunknown/hasmoved are hard; notaccept only when permanent."""
    if reason in HARD_REASONS:
        return True
    if reason == "notaccept":
        cls = _class_digit(status, replycode)
        return cls != "4"
    return False


def classify_reply(code: int | None, status: str | None, text: str, *,
                   command: str | None = None) -> Classification:
    """Classify an SMTP reply code, an enhanced status code and the diagnostic text around them.

    Any argument may be missing: the code and status are looked for in `text` when not given.
    `command` is the SMTP command the reply answered (CONN, EHLO, MAIL, RCPT, DATA), else the one the text
    names: a "user unknown" given only after DATA, or at no known stage and without an X.1.1 status, is a
    filter's verdict (Sisimai's filtered), not a missing mailbox.
    """
    status = _normalise_status(status) or find_status(text)
    command = command or find_command(text)
    if code is None:
        code = find_replycode(text)
    if status is not None and status.startswith("2."):
        return Classification("delivered", False, status, code, HIGH)
    reason, confidence = _reason(code, status, text, command)
    if status is None or (status.endswith(".0.0") and reason in _REASON_STATUS):
        status = _synthetic_status(reason, status, code, text)
    return Classification(reason, is_hardbounce(reason, status, code), status, code, confidence)


def _reason(code: int | None, status: str | None, text: str, command: str | None) -> tuple[str, Confidence]:
    """Provider code, precise status, precise phrases, the status as a hint, generic words, the stage,
    the bare reply code: the first that speaks decides, and says how sure it is."""
    detail = status.split(".", 1)[1] if status else None
    by_provider = provider_reason(text)
    if by_provider is not None:
        return by_provider, HIGH
    cause = _GIVE_UP.sub(" ", text)
    by_text = match_text(cause)
    if by_text is None and (cause == text or detail in (None, "0.0")):
        by_text = match_text(text)
    by_status = _STATUS_REASONS.get(detail or "") if detail != "0.0" else None
    if by_status is None and detail is not None and detail.startswith("6."):
        by_status = "contenterror"  # X.6.x: message content or media (RFC 3463 3.7), newer details too
    if detail == "4.4" and by_text == "networkerror":
        return by_text, HIGH  # "unable to route" because the name servers failed, not an unknown name
    if detail in _ABSOLUTE_STATUS or detail in _STRONG_STATUS:
        # a precise status is not refined by the stage: "5.1.1" after DATA still means no such user
        overridable = detail in _STRONG_STATUS and detail not in _ABSOLUTE_STATUS
        # a phrase that names the recipient's own refusal says the mailbox exists, against an X.1.1
        chosen = by_text == "filtered" and names_recipient_choice(cause)
        by_phrase = overridable and (by_text in _OVERRIDING or chosen)
        reason = by_text if by_phrase and by_text else _STATUS_REASONS[detail or ""]
        if reason in _TEMPORARY_DNS and _class_digit(status, code) == "4":
            return "networkerror", MEDIUM  # 4.1.2/4.4.4: the lookup failed for now, the name may exist
        return reason, HIGH if by_text == by_status else MEDIUM
    if by_text is not None:
        reason, confidence = by_text, HIGH if by_text == by_status else MEDIUM
    else:
        reason, confidence = _weak_reason(code, detail, by_status, cause)
    return _refine(reason, _class_digit(status, code), text, command, detail), confidence


def _weak_reason(code: int | None, detail: str | None, by_status: str | None,
                 cause: str) -> tuple[str, Confidence]:
    """No precise phrase and no precise status: a status hint, generic words, the bare reply code."""
    weak = match_weak(cause)
    if by_status is not None and not (detail in _VAGUE_STATUS and weak is not None):
        return by_status, MEDIUM
    if weak is not None:
        return weak, LOW
    if code is not None and code in _REPLY_REASONS:
        return _REPLY_REASONS[code], LOW
    return "onhold", LOW


def _refine(reason: str, cls: str | None, text: str, command: str | None, detail: str | None = None) -> str:
    """Adjustments that depend on when or how the failure happened, not on what it says.

    Not applied when a precise status code decided: "5.1.1" after DATA still means no such user.
    """
    after_data = command == "DATA" if command else bool(_AFTER_DATA.search(text))
    if reason == "userunknown" and after_data:
        return "filtered"  # "user unknown" only after the body was sent: a content filter's verdict
    if reason == "userunknown" and command != "RCPT" and detail is not None and detail[0] in "27":
        # "user unknown" under a status that says the mailbox exists (X.2.1 disabled) or that delivery was
        # not authorised (X.7.x), and not at RCPT where a lookup would fail: a refusal by the recipient's
        # filter or settings, not a missing mailbox
        return "filtered"
    if reason == "userunknown" and command is None and detail in (None, "0.0"):
        # "user unknown" with neither the RCPT stage nor an X.1.1 status behind it: the mailbox may
        # exist and a filter used the words (Sisimai's Filtered); a missing mailbox shows at RCPT
        return "filtered"
    if command == "MAIL" and reason in ("userunknown", "hostunknown"):
        return "rejected"  # refused at MAIL FROM: it is the sender's address that does not exist
    if command in ("CONN", "HELO") and reason in _VAGUE_AT_CONNECT:
        return "blocked"  # refused before any envelope was sent: only the client itself was judged
    if reason in _TEMPORARY_DNS and (cls == "4" or _TEMPORARY_WORDS.search(text)):
        return "networkerror"  # a temporary lookup failure says nothing about the domain's existence
    return reason


def _synthetic_status(reason: str, status: str | None, code: int | None, text: str) -> str | None:
    """Fill a missing status from the reason, so consumers always get a class digit they can act on."""
    cls = _class_digit(status, code)
    if cls is None:
        lowered = text.lower()
        temporary = any(w in lowered for w in ("temporar", "try again", "retry", "deferred", "delayed"))
        cls = "4" if temporary or (reason in ("expired",) and "permanent" not in lowered) else "5"
        if reason == "expired":
            gave_up = ("permanent", "gave up", "giving up", "aborted")  # the retries ended: a final failure
            cls = "5" if any(w in lowered for w in gave_up) else cls
    detail = _REASON_STATUS.get(reason)
    if detail is None:
        return status if status is not None else f"{cls}.0.0"
    return f"{cls}.{detail}"


def _class_digit(status: str | None, code: int | None) -> str | None:
    if status:
        return status[0]
    if code is not None:
        return str(code)[0]
    return None


def _normalise_status(status: str | None) -> str | None:
    if not status:
        return None
    m = _STATUS_RE.search(status)
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else None
