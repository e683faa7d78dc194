"""One-click unsubscribe (RFC 8058) that Postwire honours itself, and the Feedback-ID header.

The flow (docs/unsubscribe.md):
1. the router decides per message: bulk mail, and mail whose send asked for it, gets Postwire's
   ``List-Unsubscribe``; every message gets a ``Feedback-ID`` (:func:`feedback_id`). A message that gets
   List-Unsubscribe is signed by the sender, per recipient, like tracked mail;
2. the sender, before each attempt, adds the header fields to the recipient's copy (:func:`add_headers`:
   ``List-Unsubscribe: <https://<tracking host>/u/<token>>`` plus the customer's own mailto, and
   ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``), then DKIM-signs it, these fields included;
3. the api-gateway verifies the token (:func:`read_token`) at ``/u/<token>``: a GET shows a page with a
   button, a POST suppresses the address for the account's bulk mail (or the list) and publishes an
   ``unsubscribed`` event.

A token is ``base64url(version ‖ SIV ‖ encrypted payload)``: the payload (account, message id, list id,
recipient) is encrypted with a keystream drawn from the SIV, which is an HMAC of the payload. So the token
names no address to whoever reads the URL, is the same for the same recipient of the same message (a
redelivered message carries the same link), and cannot be altered or made without the key: a tampered
token is refused, never a suppression. The key is derived from the tracking key, so it comes from the same
secret (POSTWIRE_VERP_SECRET) and neither can stand in for the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from postwire.core.sendoptions import HEADER_END, header_fields
from postwire.core.tracking import BadToken as BadToken  # read_token's error (re-exported)
from postwire.core.tracking import token_bytes

PATH: Final = "/u/"
ONE_CLICK: Final = b"List-Unsubscribe=One-Click"
VERSION: Final = 1
MAX_LIST_ID: Final = 100
_SIV_LEN: Final = 16
_LABEL: Final = b"postwire unsubscribe v1"
_TOKEN_CHARS: Final = re.compile(r"^[A-Za-z0-9_-]{40,1200}$")
_FIELD_NAME: Final = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_MAILTO: Final = re.compile(rb"<\s*(mailto:[^<>\s]+)\s*>", re.IGNORECASE)
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._@+/=-]")
_LIST_ID: Final = re.compile(rb"(?im)^list-id[ \t]*:(.*(?:\r?\n[ \t].*)*)")
_LIST_ID_VALUE: Final = re.compile(r"<([^<>\s]{1,100})>")


@dataclass(frozen=True)
class Unsubscribe:
    """What a token says: who unsubscribes from which account's mail (the list, when one is named)."""

    account_id: str
    message_id: str
    recipient: str
    list_id: str = ""

    @property
    def scope(self) -> str:
        """The suppression's scope (postwire.db.suppressions): the list, else the account's bulk mail."""
        return f"list:{self.list_id}" if self.list_id else "bulk"


def token_key(tracking_key: bytes) -> bytes:
    """The unsubscribe key, derived from the tracking key (postwire.core.tracking) under its own label."""
    return hmac.new(tracking_key, _LABEL, hashlib.sha256).digest()


def _keystream(key: bytes, siv: bytes, n: int) -> bytes:
    return hashlib.shake_256(key + b"stream" + siv).digest(n)


def _pack(*parts: str) -> bytes:
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8")
        if len(data) > 0xFFFF:
            raise ValueError("token field too long")
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def _unpack(data: bytes, count: int) -> list[str]:
    parts, at = [], 0
    for _ in range(count):
        if at + 2 > len(data):
            raise BadToken("malformed token")
        n = int.from_bytes(data[at:at + 2], "big")
        if at + 2 + n > len(data):
            raise BadToken("malformed token")
        try:
            parts.append(data[at + 2:at + 2 + n].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BadToken("malformed token") from e
        at += 2 + n
    if at != len(data):
        raise BadToken("malformed token")
    return parts


def make_token(key: bytes, what: Unsubscribe) -> str:
    payload = _pack(what.account_id, what.message_id, what.list_id, what.recipient)
    siv = hmac.new(key, bytes([VERSION]) + payload, hashlib.sha256).digest()[:_SIV_LEN]
    sealed = bytes(a ^ b for a, b in zip(payload, _keystream(key, siv, len(payload)), strict=True))
    return base64.urlsafe_b64encode(bytes([VERSION]) + siv + sealed).rstrip(b"=").decode("ascii")


def read_token(key: bytes, token: str) -> Unsubscribe:
    """The verified token; raises :class:`BadToken` for anything not issued with ``key``."""
    data = token_bytes(token, _TOKEN_CHARS)
    if len(data) < 1 + _SIV_LEN + 8 or data[0] != VERSION:
        raise BadToken("malformed token")
    siv, sealed = data[1:1 + _SIV_LEN], data[1 + _SIV_LEN:]
    payload = bytes(a ^ b for a, b in zip(sealed, _keystream(key, siv, len(sealed)), strict=True))
    expected = hmac.new(key, bytes([VERSION]) + payload, hashlib.sha256).digest()[:_SIV_LEN]
    if not hmac.compare_digest(siv, expected):
        raise BadToken("bad signature")
    account_id, message_id, list_id, recipient = _unpack(payload, 4)
    return Unsubscribe(account_id, message_id, recipient, list_id)


def header_safe(value: str) -> str:
    """A Feedback-ID part: no colon (the separator), no whitespace, nothing a header could not hold."""
    return _UNSAFE.sub("", value)[:64]


def feedback_id(tags: list[str], account_id: str, stream: str) -> str:
    """Gmail's ``<campaign>:<customer>:<mail type>:<sender>``: the first tag (else ``none``), the
    account, the lane and ``postwire``."""
    campaign = header_safe(tags[0]) if tags else ""
    return f"{campaign or 'none'}:{header_safe(account_id)}:{header_safe(stream)}:postwire"


def list_id_of(head: bytes) -> str:
    """The list identifier of a ``List-Id`` header field (RFC 2919 ``Name <id>``) in the top-level
    header block of ``head``; '' when there is none."""
    end = HEADER_END.search(head)
    m = _LIST_ID.search(head if end is None else head[:end.start()])
    if m is None:
        return ""
    found = _LIST_ID_VALUE.search(m.group(1).decode("utf-8", "replace"))
    return found.group(1) if found else ""


def add_headers(raw: bytes, *, feedback: str = "", unsubscribe_url: str = "") -> bytes:
    """``raw`` with ``Feedback-ID: feedback`` (unless the message has its own) and, with
    ``unsubscribe_url``, Postwire's List-Unsubscribe and List-Unsubscribe-Post in place of the message's
    own: the customer's ``mailto:`` URIs are kept after ours, their http(s) ones dropped (one-click
    applies to the https URI; two would leave a receiver to guess)."""
    if not feedback and not unsubscribe_url:
        return raw
    end = HEADER_END.search(raw)
    head, rest = (raw, b"") if end is None else (raw[:end.start()], raw[end.start():])
    nl = b"\r\n" if (end is not None and end.group(0).startswith(b"\r")) or b"\r\n" in head else b"\n"
    kept: list[bytes] = []
    mailtos: list[bytes] = []
    has_feedback = False
    for whole in header_fields(head):
        m = _FIELD_NAME.match(whole)
        name = m.group(1).lower() if m else b""
        has_feedback = has_feedback or name == b"feedback-id"
        if unsubscribe_url and name in (b"list-unsubscribe", b"list-unsubscribe-post"):
            if name == b"list-unsubscribe":
                mailtos += [u for u in _MAILTO.findall(whole) if u not in mailtos]
            continue
        if kept and not kept[-1].endswith(b"\n"):
            kept[-1] += nl
        kept.append(whole)
    added: list[bytes] = []
    if unsubscribe_url:
        uris = [b"<" + unsubscribe_url.encode("ascii") + b">"] + [b"<" + u + b">" for u in mailtos]
        added += [b"List-Unsubscribe: " + b", ".join(uris) + nl, b"List-Unsubscribe-Post: " + ONE_CLICK + nl]
    if feedback and not has_feedback:
        added.append(b"Feedback-ID: " + feedback.encode("ascii") + nl)
    new_head = b"".join(added) + b"".join(kept)
    if rest and new_head.endswith(b"\n"):  # the blank line's ending is the first of ``rest``
        new_head = new_head[:-2] if new_head.endswith(b"\r\n") else new_head[:-1]
    return new_head + rest


def url(base: str, token: str) -> str:
    return f"{base.rstrip('/')}{PATH}{token}"
