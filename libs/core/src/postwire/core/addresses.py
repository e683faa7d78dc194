"""Mailbox parsing and the header-safety checks every header-bound field goes through.

Addresses are checked with email-validator (syntax only: no DNS on the request path) and kept in their
ASCII form: internationalised domains become IDNA (xn--…), which every MTA accepts. Non-ASCII local
parts would need SMTPUTF8 end to end, which the pipeline does not offer yet, so they are refused.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.headerregistry import Address

from email_validator import EmailNotValidError, validate_email

_NAME_ADDR = re.compile(r"^(?P<name>.*?)\s*<(?P<addr>[^<>]*)>$", re.S)
_LINE_BREAK = re.compile(r"[\r\n\x00]")


class AddressError(ValueError):
    """An address that cannot be used; the text says why (email-validator's explanation)."""


@dataclass(frozen=True)
class Mailbox:
    display_name: str
    address: str

    def header(self) -> Address:
        return Address(display_name=self.display_name, addr_spec=self.address)

    def __str__(self) -> str:
        return str(self.header())


def has_line_break(value: str) -> bool:
    """CR, LF (or NUL) in a header-bound value would let a caller inject headers or a body."""
    return _LINE_BREAK.search(value) is not None


@functools.lru_cache(maxsize=16_384)
def normalize_address(addr: str) -> str:
    """Syntax-check ``addr`` and return its envelope form; raise :class:`AddressError`. Cached (only
    valid addresses: an exception is not): email_validator takes some 60 us per address, and a sender's
    From, Reply-To and regular recipients come again and again."""
    if has_line_break(addr):
        raise AddressError("line breaks (CR/LF) are not allowed")
    try:
        # test_environment: the reserved .test TLD (RFC 6761) is where staging and test setups
        # point their MX records; deliverability is for the MX lookup to decide, not the API
        info = validate_email(addr.strip(), check_deliverability=False, allow_smtputf8=False,
                              test_environment=True)
    except EmailNotValidError as e:
        raise AddressError(f"invalid email address {addr.strip()!r}: {e}") from None
    return info.ascii_email or info.normalized  # ascii_email is always set without SMTPUTF8


def parse_mailbox(value: str) -> Mailbox:
    """Accept ``addr@example.com`` or ``Name <addr@example.com>`` (the name may be quoted)."""
    if has_line_break(value):
        raise AddressError("line breaks (CR/LF) are not allowed")
    value = value.strip()
    m = _NAME_ADDR.match(value)
    name, addr = (m["name"].strip(), m["addr"]) if m else ("", value)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return Mailbox(display_name=name, address=normalize_address(addr))


def split_address_list(value: str) -> list[str]:
    """``value`` split at the commas that separate addresses (not those in quotes or <…>); empty
    pieces (``a@x,,b@y``, a trailing comma) are dropped."""
    pieces: list[str] = []
    current: list[str] = []
    quoted, escaped, angle = False, False, 0
    for c in value:
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted and c == "<":
            angle += 1
        elif not quoted and c == ">":
            angle = max(0, angle - 1)
        elif c == "," and not quoted and angle == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(c)
    pieces.append("".join(current))
    return [p.strip() for p in pieces if p.strip()]
