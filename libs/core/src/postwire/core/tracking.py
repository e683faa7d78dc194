"""Open and click tracking: placeholders, per-recipient tokens, and the TRACKING bucket record.

The flow (docs/tracking.md):
1. the router asks the transformer to inline CSS *and* rewrite links once per message; every tracked link
   becomes ``<click prefix>PWT<nonce>x<index>Z`` and the open pixel ``<open prefix>PWT<nonce>xoZ``. The
   transformer returns the original URLs in index order; the router stores them with the recipients in
   the TRACKING bucket under the message (group) id;
2. the sender, before each attempt, replaces the placeholders with this recipient's tokens
   (:func:`personalise`) and only then DKIM-signs: inline once, personalise per recipient;
3. the api-gateway verifies a token (:func:`read_token`), looks the record up and answers the redirect or
   the pixel, publishing a ``clicked`` / ``opened`` event.

A token is ``base64url(version, group id, recipient index, link index, HMAC-SHA256[:12])``: 46 opaque
characters that name no address and cannot be altered or forged without the key, so a tampered token
is a 404, never a redirect somewhere the sender did not link to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

VERSION: Final = 1
OPEN: Final = 0xFFFF  # the link index of the open pixel
MAX_LINKS: Final = 0xFFFE
MAX_RECIPIENTS: Final = 0xFFFFFF
CLICK_PATH: Final = "/t/c/"
OPEN_PATH: Final = "/t/o/"
_MAC_LEN: Final = 12
_PAYLOAD: Final = 1 + 16 + 3 + 2
_TOKEN_CHARS: Final = re.compile(r"^[A-Za-z0-9_-]{40,60}$")
_NONCE: Final = re.compile(r"^[0-9a-f]{16}$")
_CROCKFORD: Final = "0123456789abcdefghjkmnpqrstvwxyz"
_CROCKFORD_VALUE: Final = {c: i for i, c in enumerate(_CROCKFORD)}
_LABEL: Final = b"postwire tracking v1"


class BadToken(ValueError):
    """Not a token this installation issued (malformed, tampered, or signed with another key)."""


@dataclass(frozen=True)
class Token:
    group_id: str
    recipient_index: int
    link_index: int  # OPEN for the pixel

    @property
    def is_open(self) -> bool:
        return self.link_index == OPEN


def tracking_key(verp_secret: bytes) -> bytes:
    """The token key, derived from the VERP secret every service already shares, under its own label so
    neither key can be used for the other's MACs."""
    return hmac.new(verp_secret, _LABEL, hashlib.sha256).digest()


def nonce_for(key: bytes, group_id: str) -> str:
    """The placeholders' random part: derived, so a redelivered message gets the same placeholders."""
    return hmac.new(key, b"nonce:" + group_id.encode(), hashlib.sha256).hexdigest()[:16]


def placeholder(nonce: str, link_index: int) -> str:
    return f"PWT{nonce}x{'o' if link_index == OPEN else link_index}Z"


def _id_bytes(group_id: str) -> bytes:
    if len(group_id) != 26:
        raise ValueError(f"not a Postwire message id: {group_id!r}")
    value = 0
    for c in group_id.lower():
        if c not in _CROCKFORD_VALUE:
            raise ValueError(f"not a Postwire message id: {group_id!r}")
        value = value << 5 | _CROCKFORD_VALUE[c]
    if value >= 1 << 128:
        raise ValueError(f"not a Postwire message id: {group_id!r}")
    return value.to_bytes(16, "big")


def _id_text(data: bytes) -> str:
    value = int.from_bytes(data, "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def make_token(key: bytes, group_id: str, recipient_index: int, link_index: int) -> str:
    if not 0 <= recipient_index <= MAX_RECIPIENTS or not 0 <= link_index <= OPEN:
        raise ValueError("recipient or link index out of range")
    payload = (bytes([VERSION]) + _id_bytes(group_id) + recipient_index.to_bytes(3, "big")
               + link_index.to_bytes(2, "big"))
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_LEN]
    return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")


def token_bytes(token: str, chars: re.Pattern[str] = _TOKEN_CHARS) -> bytes:
    """The bytes of an unpadded URL-safe base64 token whose text matches ``chars`` (its alphabet and
    length); raises :class:`BadToken` otherwise. Shared with postwire.core.unsubscribe's tokens."""
    if not chars.match(token):
        raise BadToken("malformed token")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as e:
        raise BadToken("malformed token") from e


def read_token(key: bytes, token: str) -> Token:
    """The verified token; raises :class:`BadToken` for anything not issued with ``key``."""
    data = token_bytes(token)
    if len(data) != _PAYLOAD + _MAC_LEN or data[0] != VERSION:
        raise BadToken("malformed token")
    payload, mac = data[:_PAYLOAD], data[_PAYLOAD:]
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_LEN]):
        raise BadToken("bad signature")
    return Token(_id_text(payload[1:17]), int.from_bytes(payload[17:20], "big"),
                 int.from_bytes(payload[20:22], "big"))


def personalise(raw: bytes, nonce: str, token_for: Callable[[int], str]) -> bytes:
    """``raw`` with every placeholder of ``nonce`` replaced by ``token_for(link index)``.

    The nonce is secret and random per message, so nothing the sender wrote can match by accident."""
    if not _NONCE.match(nonce):
        raise ValueError("bad nonce")
    pattern = re.compile(rb"PWT" + nonce.encode() + rb"x(\d{1,5}|o)Z")

    def sub(m: re.Match[bytes]) -> bytes:
        index = OPEN if m.group(1) == b"o" else int(m.group(1))
        return token_for(index).encode("ascii")

    return pattern.sub(sub, raw)


@dataclass(frozen=True)
class TrackedMessage:
    """The TRACKING bucket entry of one message: what a token's indexes point at."""

    account_id: str
    links: list[str]
    recipients: list[str]
    # per-recipient message ids (/v1/send); a recipient without one uses the group id
    message_ids: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps({"a": self.account_id, "l": self.links, "r": self.recipients,
                           "m": self.message_ids, "t": self.tags, "d": self.metadata},
                          separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrackedMessage:
        d: dict[str, Any] = json.loads(data)
        return cls(account_id=d["a"], links=list(d["l"]), recipients=list(d["r"]),
                   message_ids=dict(d.get("m") or {}), tags=list(d.get("t") or []),
                   metadata=dict(d.get("d") or {}))

    def message_id(self, group_id: str, recipient: str) -> str:
        return self.message_ids.get(recipient, group_id)


def unique_key(token: Token) -> str:
    """The bucket key whose first creation marks a unique open (per recipient) or click (per link)."""
    what = "o" if token.is_open else f"c{token.link_index}"
    return f"{token.group_id}.u.{token.recipient_index}.{what}"
