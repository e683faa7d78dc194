"""The replies ingest-smtp's protocol layer sends, and aiosmtpd's stock replies it rewrites.

Each refusal carries an enhanced status code (RFC 3463) and is counted by a reason from
metrics.REJECT_REASONS. docs/reliability.md shows which hostile input gets which.
"""

from __future__ import annotations

QUEUED_PREFIX = "250 2.0.0 Ok: queued as "
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6 allows 998 characters)"
BARE_LF = "550 5.6.0 Message refused: bare LF in message data, lines must end with CRLF (RFC 5321 2.3.8)"
BARE_CR = "550 5.6.0 Message refused: bare CR in message data, lines must end with CRLF (RFC 5321 2.3.8)"
NUL = "550 5.6.0 Message refused: NUL character in message data (RFC 5322 2.3)"
NEED_RCPT = "503 5.5.1 Error: need RCPT command"
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
UNKNOWN_COMMAND = "500 5.5.2 Error: command not recognized"
AUTH_TEMPFAIL = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_LOCKED = "454 4.7.0 Too many failed logins, try again later"

# sent just before the server closes the connection
SYNC_ERROR = "554 5.5.0 Error: SMTP protocol synchronization"  # Postfix's text, same case
TOO_MANY_ERRORS = "421 4.7.0 Error: too many errors, closing connection"
COMMAND_TIMEOUT = "421 4.4.2 Error: timeout exceeded, closing connection"
DATA_TIMEOUT = "421 4.4.2 Error: timeout exceeded while receiving the message, closing connection"
SHUTDOWN = "421 4.3.2 Service shutting down, closing connection"


def over_connection_limit(why: str, ip: object) -> str:
    """The greeting instead of 220 for a client over a limits.ConnectionLimits limit."""
    if why == "connection_rate":
        return f"421 4.7.0 Too many connections from {ip} in the last minute"
    return f"421 4.7.0 Too many connections from {ip}"


def unverified_from(domain: str) -> str:
    """DATA's refusal of mail From a domain the account may not send as (postwire.db.sender_domains)."""
    return (f"550 5.7.1 Sender domain {domain} is not a verified sending domain of this account; verify it "
            "(POST /v1/domains/{name}/verify) or send From one that is")


def header_too_big(limit: int) -> str:
    return f"552 5.3.4 Message header block exceeds {limit} octets"


# aiosmtpd 1.4's stock replies that lack an enhanced status code, or say something we do not mean, and
# what we send instead, with the reject reason to count. A unit test checks each key still occurs in
# aiosmtpd's source.
REPLY_REWRITES: dict[str, tuple[str, str | None]] = {
    "552 Error: message size exceeds fixed maximum message size": (TOO_BIG, "too_big"),
    "500 Command line too long":
        ("500 5.5.2 Command line too long (RFC 5321 4.5.3.1.4 allows 512 octets)", "command_too_long"),
    "500 Error: bad syntax": ("500 5.5.2 Error: bad syntax", None),
    "503 Error: need MAIL command": ("503 5.5.1 Error: need MAIL command", None),
    "503 Already authenticated": ("503 5.5.1 Already authenticated", None),
    "555 MAIL FROM parameters not recognized or not implemented":
        ("555 5.5.4 MAIL FROM parameters not recognized or not implemented", "bad_parameter"),
    "555 RCPT TO parameters not recognized or not implemented":
        ("555 5.5.4 RCPT TO parameters not recognized or not implemented", "bad_parameter"),
    # SMTPUTF8 (RFC 6531) is not offered: the pipeline carries ASCII addresses only (as the API does)
    "501 Error: SMTPUTF8 disabled":
        ("555 5.5.4 SMTPUTF8 is not supported, addresses must be ASCII", "smtputf8"),
    "500 Error: strict ASCII mode":
        ("553 5.6.7 Non-ASCII characters need SMTPUTF8, which this server does not offer", "smtputf8"),
}
