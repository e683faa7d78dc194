"""SMTP replies and what they mean for a recipient: delivered, deferred or failed.

A reply is either what a remote server said or one we synthesise for a failure that has no remote
answer (DNS, connection); synthesised ones carry ``smtp_code`` 0 and an RFC 3463 enhanced code, the way
Postfix reports ``dsn=4.4.1`` for a refused connection.

Every failure also gets a Sisimai reason and a hard/soft verdict (:meth:`Reply.verdict`), from the same
classifier the bounce receiver applies to DSNs (``postwire.bounce_classifier``), so a synchronous
"550 5.1.1" and a DSN reporting the same refusal end up with the same reason (docs/bounces.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from postwire.bounce_classifier.classify import Classification, classify_reply, is_hardbounce

Outcome = Literal["delivered", "deferred", "failed"]

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")

# The replies we synthesise (``local``) name their condition exactly through the enhanced code we chose,
# so their reason comes from this table rather than from phrases in our own explanation.
LOCAL_REASONS: dict[str, str] = {
    "4.4.1": "networkerror",    # connection refused / timed out / greeting never came
    "4.4.2": "networkerror",    # connection lost mid-transaction
    "4.4.3": "networkerror",    # temporary DNS failure (SERVFAIL, timeout)
    "5.1.2": "hostunknown",     # NXDOMAIN
    "5.4.4": "hostunknown",     # no MX and no A/AAAA, or MX hosts without addresses
    "5.1.10": "notaccept",      # null MX (RFC 7505)
    "4.7.10": "failedstarttls", # TLS required by the shaping rule, STARTTLS not offered
    "4.7.5": "failedstarttls",  # TLS required, handshake failed
    "4.4.7": "expired",         # the retry lifetime ran out
    "4.5.0": "syntaxerror",     # the server answered something that is not an SMTP reply
    "5.3.0": "systemerror",     # the body vanished from the object store: our failure, not the address's
    "5.6.0": "template",        # a personalised message could not be rendered for this recipient
}


@dataclass(frozen=True)
class Reply:
    code: int  # 0 when no server answered
    enhanced: str
    text: str  # the full reply as the server sent it ("550 5.1.1 no such user"), or our explanation
    mx_host: str = ""
    # the SMTP stage the server answered (CONN, HELO, MAIL, RCPT, DATA); "" for our own replies. A
    # "user unknown" after DATA is a content filter's verdict, not a missing mailbox (classify_reply)
    command: str = ""

    @property
    def outcome(self) -> Outcome:
        klass = self.code // 100 if self.code else int(self.enhanced[:1] or "4")
        if klass == 2:
            return "delivered"
        return "failed" if klass == 5 else "deferred"

    def verdict(self) -> Classification:
        """Sisimai reason and hard/soft verdict of this reply. A deferral is never a hard bounce, whatever
        its text says: the address is tried again, and only a final failure may suppress it."""
        reason = LOCAL_REASONS.get(self.enhanced) if not self.code or self.code == 556 else None
        if reason is not None:
            found = Classification(reason, is_hardbounce(reason, self.enhanced, self.code or None),
                                   self.enhanced, self.code or None)
        else:
            found = classify_reply(self.code or None, self.enhanced or None, self.text,
                                   command=self.command or None)
        if self.outcome != "failed" and found.hardbounce:
            found = Classification(found.reason, False, found.status, found.replycode)
        return found

    def event_fields(self) -> dict[str, Any]:
        """The Event fields that describe this reply: code, status, text, and for a failure (deferred or
        failed) its reason and hard/soft verdict. A delivery needs no classification."""
        fields: dict[str, Any] = {"smtp_code": self.code, "enhanced_status": self.enhanced,
                                  "response": self.text}
        if self.outcome != "delivered":
            verdict = self.verdict()
            fields.update(reason=verdict.reason, hardbounce=verdict.hardbounce)
        return fields


def from_server(code: int, message: str, mx_host: str, command: str = "") -> Reply:
    """A server's reply; the enhanced code is taken from its text when present (RFC 2034). ``command``
    is the stage it answered (CONN, HELO, MAIL, RCPT, DATA) when the caller knows it."""
    message = " ".join(line.strip() for line in message.splitlines()).strip()
    if not 200 <= code <= 599:  # garbage (aiosmtplib's -1 for a malformed line): a protocol error, retry
        return local("4.5.0", f"protocol error: {mx_host} answered {message[:200]!r}", mx_host=mx_host)
    match = _ENHANCED.match(message)
    enhanced = match.group(0) if match else ""
    return Reply(code=code, enhanced=enhanced, text=f"{code} {message}".strip(), mx_host=mx_host,
                 command=command)


def local(enhanced: str, text: str, *, code: int = 0, mx_host: str = "") -> Reply:
    """A reply no server gave: DNS and connection failures, expiry. ``code`` only where a standard
    names one (RFC 7505's 556 for a null MX)."""
    return Reply(code=code, enhanced=enhanced, text=text, mx_host=mx_host)
