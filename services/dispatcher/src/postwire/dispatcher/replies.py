"""SMTP replies and what they mean for a recipient: delivered, deferred or failed.

A reply is either what a remote server said or one we synthesise for a failure that has no remote
answer (DNS, connection); synthesised ones carry ``smtp_code`` 0 and an RFC 3463 enhanced code, the way
Postfix reports ``dsn=4.4.1`` for a refused connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["delivered", "deferred", "failed"]

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class Reply:
    code: int  # 0 when no server answered
    enhanced: str
    text: str  # the full reply as the server sent it ("550 5.1.1 no such user"), or our explanation
    mx_host: str = ""

    @property
    def outcome(self) -> Outcome:
        klass = self.code // 100 if self.code else int(self.enhanced[:1] or "4")
        if klass == 2:
            return "delivered"
        return "failed" if klass == 5 else "deferred"


def from_server(code: int, message: str, mx_host: str) -> Reply:
    """A server's reply; the enhanced code is taken from its text when present (RFC 2034)."""
    message = " ".join(line.strip() for line in message.splitlines()).strip()
    match = _ENHANCED.match(message)
    enhanced = match.group(0) if match else ""
    return Reply(code=code, enhanced=enhanced, text=f"{code} {message}".strip(), mx_host=mx_host)


def local(enhanced: str, text: str, *, code: int = 0, mx_host: str = "") -> Reply:
    """A reply no server gave: DNS and connection failures, expiry. ``code`` only where a standard
    names one (RFC 7505's 556 for a null MX)."""
    return Reply(code=code, enhanced=enhanced, text=text, mx_host=mx_host)
