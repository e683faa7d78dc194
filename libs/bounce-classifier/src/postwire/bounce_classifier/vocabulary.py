"""The Sisimai reason vocabulary (../shared/corpus/bounces/REASONS.md), the closed set of values an
event's ``reason`` may take. Metrics label by reason, so the set must stay bounded: anything outside it
is reported as ``undefined``."""

from __future__ import annotations

REASONS: frozenset[str] = frozenset({
    "authfailure", "badreputation", "blocked", "contenterror", "exceedlimit", "expired", "failedstarttls",
    "feedback", "filtered", "hasmoved", "hostunknown", "mailboxfull", "mailererror", "mesgtoobig",
    "networkerror", "norelaying", "notaccept", "notcompliantrfc", "onhold", "policyviolation", "rejected",
    "requireptr", "securityerror", "spamdetected", "speeding", "suppressed", "suspend", "syntaxerror",
    "systemerror", "systemfull", "toomanyconn", "userunknown", "virusdetected", "delivered", "vacation",
    "undefined",
})


def bounded(reason: str) -> str:
    """``reason`` if it is in the vocabulary, else ``undefined`` (keeps metric label sets finite)."""
    return reason if reason in REASONS else "undefined"
