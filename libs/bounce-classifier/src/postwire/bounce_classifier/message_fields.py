"""Tolerant access to a bounce mail: parse it, decode its text, find its parts.

Bounces are often malformed (wrong charsets, broken MIME, bodies cut mid-line), so everything here
uses the compat32 policy and falls back to a best-effort decode instead of raising.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

_ADDR_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
_SERVICE_LOCALS = ("mailer-daemon", "postmaster", "mail.delivery.system", "mdaemon", "no-reply",
                   "noreply", "post_master", "poostmaster")


def load(raw: bytes) -> Message:
    """Parse raw bytes with the lenient compat32 policy (never raises on broken MIME)."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def header(msg: Message, name: str) -> str:
    """A header decoded from RFC 2047 words to text; "" when absent or undecodable."""
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # undecodable encoded-words: keep the raw value
        return str(value)


def addresses(value: str) -> list[str]:
    """Mail addresses in a header value or a line of text, without angle brackets."""
    found = [addr for _, addr in getaddresses([value]) if "@" in addr]
    return [a.strip("<>.") for a in found] or extract_addresses(value)


def extract_addresses(text: str) -> list[str]:
    """Every mail address in free text, in order, deduplicated case-insensitively."""
    seen: set[str] = set()
    out: list[str] = []
    for m in _ADDR_RE.finditer(text):
        addr = m.group(0).strip(".-'")
        if addr.lower().startswith("mailto:"):
            addr = addr[7:]
        key = addr.lower()
        if key not in seen:
            seen.add(key)
            out.append(addr)
    return out


def is_service_address(addr: str) -> bool:
    """Addresses of mail systems themselves (MAILER-DAEMON, postmaster), never a bounced recipient."""
    local = addr.split("@", 1)[0].lower()
    return local in _SERVICE_LOCALS


def content_type(part: Message) -> str:
    """The part's MIME type, lowercased; a header folded without its ";" ("text/plain\\n  charset=…")
    still gives "text/plain"."""
    ctype = part.get_content_type()
    return ctype.split()[0].rstrip(";") if ctype.strip() else "text/plain"


def part_text(part: Message) -> str:
    """The decoded text of a leaf part; falls back from the declared charset to UTF-8 to Latin-1."""
    payload = part.get_payload(decode=True)
    if payload is None:
        inner = part.get_payload()
        if isinstance(inner, list):
            return "\n".join(as_text(p) for p in inner if isinstance(p, Message))
        return str(inner or "")
    if not isinstance(payload, bytes):
        return str(payload)
    charset = _charset(part)
    for candidate in (charset, "utf-8", "latin-1"):
        if not candidate:
            continue
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1", "replace")


def _charset(part: Message) -> str | None:
    charset = part.get_content_charset()
    if charset in ("iso-2022-jp", "iso2022-jp"):
        return "iso2022_jp_ext"
    if charset == "uft-8":
        return "utf-8"
    return charset


def as_text(msg: Message) -> str:
    """A (sub)message rendered back to text, headers included; "" if the generator chokes on it."""
    try:
        return msg.as_string()
    except Exception:  # broken parts (bad encodings) cannot always be re-serialised
        return ""


def walk_leaves(msg: Message) -> list[Message]:
    """Leaf parts in document order, not descending into attached original messages."""
    out: list[Message] = []
    _collect(msg, out, top=True)
    return out


def _collect(part: Message, out: list[Message], top: bool) -> None:
    ctype = content_type(part)
    if ctype in ("message/rfc822", "text/rfc822-headers") and not top:
        out.append(part)
        return
    if part.is_multipart() and (not ctype.startswith("message/") or ctype == "message/rfc822"):
        payload = part.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message):
                    _collect(sub, out, top=False)
            return
    out.append(part)


def original_headers(msg: Message) -> Message | None:
    """The headers of the returned original message (message/rfc822 or text/rfc822-headers part)."""
    for part in walk_leaves(msg):
        ctype = content_type(part)
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
        if ctype == "text/rfc822-headers":
            return load(part_text(part).encode("utf-8", "replace"))
    return None
