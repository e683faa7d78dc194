"""VERP return paths: the envelope sender of every outgoing transaction names the message and recipient.

The dispatcher sends each recipient in its own SMTP transaction with ``MAIL FROM:<return path>`` where
the return path is::

    pw1-<message id>-<recipient hash>-<tag>@<bounce domain>

- ``message id``: the 26-character lower-case id Postwire gave the message (up to 32 characters of
  ``[0-9a-z]`` are accepted, which still fits the limit below);
- ``recipient hash``: 50 bits of SHA-256 over the normalised recipient (local part lower-cased, domain
  as a lower-case IDNA A-label), 10 characters;
- ``tag``: 80 bits of HMAC-SHA256(secret, version, message id, recipient hash, bounce domain),
  16 characters.

Each field uses the Crockford base32 alphabet in lower case, so the address is plain ASCII, survives the
case changes some MTAs make (decoding lower-cases it), and the local part is at most 64 octets (RFC 5321
§4.5.3.1.1) whatever the recipient: ``4 + 32 + 1 + 10 + 1 + 16 = 64`` with the longest message id, 58
with a normal one. The recipient is hashed rather than embedded because a full address (up to 254
octets, maybe non-ASCII) cannot fit; the bounce receiver learns the candidates from the message's
recipient list and picks the one that :func:`matches`. The tag makes the address tamper-evident: any
changed character, another secret, or the same local part on another domain fails :func:`decode` with
:class:`InvalidVerp`. The tag does not cover the full recipient, so the hash is what binds the address
to one recipient (50 bits: a clash among one message's recipients is vanishingly unlikely).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

import idna

PREFIX = "pw1"
LOCAL_PART_MAX = 64
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as postwire.core.ids
_RCPT_BITS, _TAG_BITS = 50, 80
_RCPT_CHARS, _TAG_CHARS = _RCPT_BITS // 5, _TAG_BITS // 5
_MESSAGE_ID = re.compile(r"^[0-9a-z]{1,32}$")
_LOCAL = re.compile(rf"^{PREFIX}-([0-9a-z]{{1,32}})-([{_ALPHABET}]{{{_RCPT_CHARS}}})-"
                    rf"([{_ALPHABET}]{{{_TAG_CHARS}}})$")


class InvalidVerp(ValueError):
    """Not a Postwire return path, or one whose tag does not verify (forged, altered, other secret)."""


@dataclass(frozen=True)
class DecodedVerp:
    message_id: str
    recipient_hash: str
    bounce_domain: str


def _b32(digest: bytes, bits: int) -> str:
    value = int.from_bytes(digest, "big") >> (len(digest) * 8 - bits)
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(bits - 5, -1, -5))


def normalise_address(address: str) -> str:
    """The form the recipient hash is computed over: lower-case local part, A-label domain."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"not an address: {address!r}")
    return f"{local.lower()}@{normalise_domain(domain)}"


def normalise_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as e:
        raise ValueError(f"invalid domain {domain!r}: {e}") from e


def recipient_hash(recipient: str) -> str:
    digest = hashlib.sha256(normalise_address(recipient).encode("utf-8")).digest()
    return _b32(digest[:8], _RCPT_BITS)


def _tag(secret: bytes, message_id: str, rcpt_hash: str, bounce_domain: str) -> str:
    data = "\0".join((PREFIX, message_id, rcpt_hash, bounce_domain)).encode("ascii")
    return _b32(hmac.new(secret, data, hashlib.sha256).digest()[:16], _TAG_BITS)


def encode(message_id: str, recipient: str, secret: bytes, bounce_domain: str) -> str:
    """The return path for ``recipient`` of ``message_id``; raises ValueError on a malformed input."""
    if not _MESSAGE_ID.match(message_id):
        raise ValueError(f"message id must be 1-32 characters of [0-9a-z]: {message_id!r}")
    if not secret:
        raise ValueError("the VERP secret is empty")
    domain = normalise_domain(bounce_domain)
    rcpt = recipient_hash(recipient)
    local = f"{PREFIX}-{message_id}-{rcpt}-{_tag(secret, message_id, rcpt, domain)}"
    assert len(local) <= LOCAL_PART_MAX
    return f"{local}@{domain}"


def decode(address: str, secret: bytes, bounce_domain: str | None = None) -> DecodedVerp:
    """Verify ``address`` and return what it encodes. With ``bounce_domain``, the address must also be
    on that domain (a receiver serving one domain should pass it). Raises :class:`InvalidVerp`."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    if not at:
        raise InvalidVerp("not an address")
    try:
        domain = normalise_domain(domain)
    except ValueError as e:
        raise InvalidVerp(str(e)) from None
    if bounce_domain is not None and domain != normalise_domain(bounce_domain):
        raise InvalidVerp(f"not on the bounce domain {bounce_domain}")
    m = _LOCAL.match(local)
    if m is None:
        raise InvalidVerp("not a Postwire return path")
    message_id, rcpt, tag = m.groups()
    if not hmac.compare_digest(tag, _tag(secret, message_id, rcpt, domain)):
        raise InvalidVerp("tag does not verify (forged, altered or signed with another secret)")
    return DecodedVerp(message_id, rcpt, domain)


def matches(decoded: DecodedVerp, recipient: str) -> bool:
    """Whether ``recipient`` is the one the return path was made for (case and IDN form ignored)."""
    try:
        return hmac.compare_digest(decoded.recipient_hash, recipient_hash(recipient))
    except ValueError:
        return False
