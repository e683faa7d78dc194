"""Identifiers: time-ordered, URL-safe, unique without coordination."""

from __future__ import annotations

import hashlib
import os
import time

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str = "") -> str:
    """A 26-character ULID-style id: 48 bits of milliseconds then 80 random bits, sortable by time."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))


def new_message_id() -> str:
    return new_id()


def derived_id(message_id: str, index: int) -> str:
    """A sibling of ``message_id``: the same time part, a random part from a digest of (id, index).
    Derived rather than drawn, so a retry that reuses the message id hands out the same siblings."""
    value = int.from_bytes(hashlib.sha256(f"{message_id}/{index}".encode()).digest()[:10], "big")
    chars = []
    for _ in range(16):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return message_id[:10] + "".join(reversed(chars))
