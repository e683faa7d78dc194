"""What we read from and add to a submitted message: the Subject for listings and our Received: header.

Both work on the header block only and never raise on malformed input: a broken Subject must not cost
the sender their message.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import re
import time
from datetime import UTC, datetime
from email.parser import BytesHeaderParser

HEADER_SCAN_MAX = 256 * 1024  # a header block larger than this is not parsed for the Subject
SUBJECT_MAX = 998
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNSAFE_HELO = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
_WHITESPACE = re.compile(r"\s+")
# a Subject field that is one unfolded line (the next line does not start with white space)
_SIMPLE_SUBJECT = re.compile(rb"^subject:[ \t]*([^\r\n]*)\r\n(?![ \t])", re.IGNORECASE | re.MULTILINE)
_ANY_SUBJECT = re.compile(rb"^subject:", re.IGNORECASE | re.MULTILINE)


def extract_subject(raw: bytes) -> str:
    """The decoded Subject on one line (RFC 2047 words decoded), or "" when absent or unreadable."""
    head = raw[:HEADER_SCAN_MAX]
    end = _HEADER_END.search(head)
    if end is not None:
        head = head[: end.start()]
    plain = _plain_subject(head)
    if plain is not None:
        return plain
    try:
        value = BytesHeaderParser(policy=email.policy.default).parsebytes(head + b"\r\n\r\n").get("subject")
        text = "" if value is None else str(value)
    except Exception:  # the stdlib header parser has raised on hostile input before; the sender's mail wins
        text = _raw_subject(head)
    return _WHITESPACE.sub(" ", text).strip()[:SUBJECT_MAX]


def _plain_subject(head: bytes) -> str | None:
    """The usual Subject: one line of printable ASCII without encoded words, which the header parser
    would return as it is; None when the parser is needed (folded, encoded, 8-bit) or there is none."""
    first = _ANY_SUBJECT.search(head)
    if first is None:
        return ""
    found = _SIMPLE_SUBJECT.match(head + b"\r\n", first.start())
    if found is None:
        return None
    value = found.group(1)
    if not value.isascii() or b"=?" in value:
        return None
    return _WHITESPACE.sub(" ", value.decode("ascii")).strip()[:SUBJECT_MAX]


def header_block_too_big(raw: bytes, limit: int) -> bool:
    """True when the header block (up to the first empty line; the whole message when there is none) is
    longer than ``limit``. Checked before anything parses the header block, so parsing stays cheap. (The
    data reader has refused bare LF already, so the empty line is CRLF CRLF.)"""
    return raw.find(b"\r\n\r\n", 0, limit + 4) == -1 and len(raw) > limit


def _raw_subject(head: bytes) -> str:
    """The undecoded Subject value when the structured parser gave up."""
    m = re.search(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", head, re.IGNORECASE | re.MULTILINE)
    return m.group(1).decode("utf-8", "replace") if m else ""


@functools.lru_cache(maxsize=2)
def _date_of_second(second: int) -> str:
    """The RFC 5322 date of a second: formatted once per second, not once per message (5 us each)."""
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(*, helo: str | None, peer_ip: str, hostname: str, message_id: str, esmtp: bool,
                    tls: tuple[str, str] | None, account_id: str, authenticated: bool,
                    recipients: list[str], now: datetime | None = None) -> bytes:
    """An RFC 5321 4.4 trace header in Postfix's layout, CRLF-terminated, ready to prepend.

    ``tls`` is (protocol version, cipher name). The account id is recorded, never credentials; the
    ``for`` clause names the recipient only when there is exactly one (as Postfix does), so a Bcc list
    is not disclosed to every recipient.
    """
    helo_name = _UNSAFE_HELO.sub("_", helo or "unknown")[:255]
    with_ = ("ESMTP" if esmtp else "SMTP") + ("S" if tls and esmtp else "") + ("A" if authenticated else "")
    lines = [f"Received: from {helo_name} ([{peer_ip}])"]
    if tls is not None:
        lines.append(f"\t(using {tls[0]} with cipher {tls[1]})")
    lines.append(f"\t({'authenticated' if authenticated else 'trusted network'} account {account_id})")
    by = f"\tby {hostname} (Postwire) with {with_} id {message_id}"
    date = email.utils.format_datetime(now) if now is not None else _date_of_second(int(time.time()))
    if len(recipients) == 1:
        lines += [by, f"\tfor <{recipients[0]}>; {date}"]
    else:
        lines += [by + ";", f"\t{date}"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")
