"""Accepting a raw RFC 5322 message: find the envelope, strip Bcc, add what an MSA must add.

The body bytes are never re-serialised (only line endings become CRLF, as SMTP would make them), so what
the caller signed or built is what goes out. Headers are edited as byte lines for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import AddressHeader
from email.message import Message
from email.parser import HeaderParser
from email.utils import format_datetime

from postwire.api_gateway.errors import InvalidInput
from postwire.core.addresses import AddressError, normalize_address
from postwire.core.compose import message_id_header

_EOL = re.compile(rb"\r\n|\r(?!\n)|\n")
# strict "name:" (no obsolete space before the colon): Python's parser would read such a line as body,
# and the Bcc filter must see exactly the fields the parser saw
_FIELD = re.compile(rb"^[!-9;-~]+:")
_BCC = re.compile(rb"^bcc:", re.I)


@dataclass(frozen=True)
class RawSubmission:
    raw: bytes
    mail_from: str
    recipients: list[str]
    subject: str


def prepare_raw(raw: bytes, mail_from: str | None, to: Sequence[str], message_id: str, domain: str,
                now: datetime) -> RawSubmission:
    """Validate and complete ``raw``; ``mail_from``/``to`` (query parameters) override the headers."""
    raw = _EOL.sub(b"\r\n", raw)
    head, sep, body = raw.partition(b"\r\n\r\n")
    fields = _fields(head + b"\r\n" if sep else raw)
    parsed = HeaderParser(policy=policy.default).parsestr(b"".join(fields).decode("utf-8", "replace"))
    sender = _sender(parsed, mail_from)
    recipients = _recipients(parsed, to)
    kept = [f for f in fields if not _BCC.match(f)]
    names = {f.split(b":", 1)[0].strip().lower() for f in kept}
    added = []
    if b"message-id" not in names:
        added.append(f"Message-ID: {message_id_header(message_id, domain)}\r\n".encode())
    if b"date" not in names:
        added.append(f"Date: {format_datetime(now)}\r\n".encode())
    out = b"".join([*added, *kept]) + b"\r\n" + (body if sep else b"")
    return RawSubmission(out, sender, recipients, str(parsed.get("Subject", "")))


def _fields(head: bytes) -> list[bytes]:
    """Split the header block into fields (each with its folded continuation lines and CRLFs)."""
    fields: list[bytes] = []
    for n, line in enumerate(head.split(b"\r\n")[:-1], start=1):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        elif _FIELD.match(line):
            fields.append(line + b"\r\n")
        else:
            raise InvalidInput(("body",), f"line {n} is not a header field; a message starts with its "
                               "headers (From:, To:, Subject: …), then an empty line, then the body",
                               "invalid_mime")
    if not fields:
        raise InvalidInput(("body",), "the message has no header fields", "invalid_mime")
    return fields


def _sender(parsed: Message, override: str | None) -> str:
    if override is not None:
        return _checked(override, ("query", "from"))
    froms = _addresses(parsed, "From")
    if len(froms) != 1:
        raise InvalidInput(("body", "From"), "the message needs exactly one From address (or give the "
                           "envelope sender as ?from=)", "invalid_address")
    return _checked(froms[0], ("body", "From"))


def _recipients(parsed: Message, to: Sequence[str]) -> list[str]:
    if to:
        found = [_checked(a, ("query", "to", i)) for i, a in enumerate(to)]
    else:
        found = [_checked(a, ("body", name))
                 for name in ("To", "Cc", "Bcc") for a in _addresses(parsed, name)]
    if not found:
        raise InvalidInput(("body",), "no recipients: give ?to= or To/Cc/Bcc headers", "missing_recipients")
    unique: dict[str, str] = {}
    for a in found:
        unique.setdefault(a.lower(), a)
    return list(unique.values())


def _addresses(parsed: Message, name: str) -> list[str]:
    """Every addr-spec in every ``name`` header (groups flattened); unparsable ones come back as text."""
    out: list[str] = []
    try:  # headers are parsed lazily, and CPython's address parser can crash on junk ("To: x@")
        for header in parsed.get_all(name, []):
            if isinstance(header, AddressHeader):
                out.extend(a.addr_spec for a in header.addresses)
            else:
                out.append(str(header))
    except Exception:
        raise InvalidInput(("body", name), f"the {name} header is not a valid address list",
                           "invalid_address") from None
    return out


def _checked(addr: str, loc: tuple[str | int, ...]) -> str:
    try:
        return normalize_address(addr)
    except AddressError as e:
        raise InvalidInput(loc, str(e), "invalid_address") from None
