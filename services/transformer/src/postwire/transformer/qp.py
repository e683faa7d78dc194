"""Quoted-printable (RFC 2045 §6.7) that keeps chosen strings whole, each on an encoded line of its own.

The tracking placeholders are replaced per recipient by a plain byte substitution over the raw message
(:func:`postwire.core.tracking.personalise`), so each must appear literally in the encoded body: never
split by a soft line break, never escaped. :func:`encode` puts a soft line break before and after every
match of ``keep``, so the line holding it is just the placeholder (plus the ``=`` of the soft break).
Any replacement of up to 75 characters (a token is 46) therefore still fits the 76-character line limit,
and every other line is at most 76 characters already.

``binascii.b2a_qp`` cannot be told where not to break, hence this small encoder: printable ASCII except
``=`` is written as is, space and tab too except at the end of a line, every other octet as ``=XX``
(upper-case hex). Line breaks in the data (CRLF, LF or a bare CR) become hard line breaks ``nl``.
"""

from __future__ import annotations

import re
from typing import Final

MAX_LINE: Final = 76  # RFC 2045: encoded lines are at most 76 characters, the soft break's "=" included
_WIDTH: Final = MAX_LINE - 1  # room for the "=" of a soft line break
_UNSAFE: Final = re.compile(rb"[^\t\n !-<>-~]+")  # all but tab, space, newline and printable ASCII save "="
_TRAILING_SPACE: Final = re.compile(rb"[ \t](?=\n|\Z)")  # would be stripped in transit: must be encoded
_LITERAL: Final = re.compile(rb"[!-<>-~]{1,75}")


def encode(data: bytes, keep: re.Pattern[bytes] | None = None, nl: bytes = b"\r\n") -> bytes:
    """``data`` as quoted-printable with hard line breaks ``nl``; each match of ``keep`` stays literal and
    sits on a line of its own, between soft line breaks (or the start or end of its hard line).

    ``keep`` must match 1 to 75 printable ASCII characters other than ``=`` (it is applied to the
    escaped text, where that is the same); a match of anything else raises ValueError.
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    escaped = _UNSAFE.sub(_hex, text)
    escaped = _TRAILING_SPACE.sub(_hex, escaped)
    soft = b"=" + nl
    lines = escaped.split(b"\n")
    for i, line in enumerate(lines):
        if len(line) > MAX_LINE or (keep is not None and keep.search(line)):
            lines[i] = soft.join(_split_line(line, keep))
    return nl.join(lines)


def _hex(match: re.Match[bytes]) -> bytes:
    return b"=" + match.group(0).hex("=").upper().encode("ascii")


def _split_line(line: bytes, keep: re.Pattern[bytes] | None) -> list[bytes]:
    """The physical lines of one escaped hard line: kept strings alone, the rest cut to fit."""
    out: list[bytes] = []
    cursor = 0
    for match in () if keep is None else keep.finditer(line):
        kept = match.group(0)
        if not _LITERAL.fullmatch(kept):
            raise ValueError(f"cannot keep {kept!r} literal in quoted-printable")
        out += _wrap(line[cursor : match.start()])
        out.append(kept)
        cursor = match.end()
    out += _wrap(line[cursor:])
    return out or [b""]


def _wrap(escaped: bytes) -> list[bytes]:
    """Cut into lines of at most 75 characters (76 with the soft break) without splitting an ``=XX``."""
    lines: list[bytes] = []
    pos = 0
    while len(escaped) - pos > _WIDTH:
        cut = pos + _WIDTH
        if escaped[cut - 1] == ord("="):
            cut -= 1
        elif escaped[cut - 2] == ord("="):
            cut -= 2
        lines.append(escaped[pos:cut])
        pos = cut
    if pos < len(escaped):
        lines.append(escaped[pos:])
    return lines
