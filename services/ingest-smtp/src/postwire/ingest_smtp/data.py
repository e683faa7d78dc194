"""Reading the message after 354: the end of data is ``<CRLF>.<CRLF>`` and nothing else.

This replaces aiosmtpd 1.4's DATA loop for three reasons:

- SMTP smuggling (CVE-2023-51764 and friends). aiosmtpd (since 1.4.5) already splits lines at CRLF only,
  so ``<LF>.<LF>``, ``<CR>.<CR>`` or ``<LF>.<CRLF>`` never end the data; but it passed bare LF and bare CR
  on inside the message, where a next hop that reads them as line ends could split it. Here any bare CR
  or LF refuses the whole message at the end of data (Postfix's ``smtpd_forbid_bare_newline = reject``),
  so a smuggled second message is never queued, alone or as part of the first.
- Memory. aiosmtpd keeps each line as its own bytearray (about 60 bytes of overhead per line, so a
  message at the size limit made of empty lines costs some 30 times the limit). Here the message grows in
  one buffer, which never holds much more than the size limit: past it, input is read and dropped until
  the end of data, so the client sees the reply in sync.
- CPU. The data is read in chunks up to the next ``.<CRLF>`` (or as much as the reader holds), not line
  by line, and checked as a whole with the bytes methods (counts, one split, one replace): a 33 KB HTML
  message is a few reads, where it was 450 trips through the loop.

The end is a ``.<CRLF>`` whose dot starts a line: the two bytes before it, across chunk boundaries, are
CRLF (or it is the very first line). Lines are limited to 998 characters plus CRLF after un-stuffing
(RFC 5321 4.5.3.1.6). A refused message is refused for the first problem in it, line by line: a bare LF
or CR, a NUL, an over-long line; the size limit outranks them all.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from postwire.ingest_smtp import replies

MAX_LINE = 998
CRLF = b"\r\n"
DOT_LINE_END = b".\r\n"
TOO_BIG = (replies.TOO_BIG, "too_big")
LINE_TOO_LONG = (replies.LINE_TOO_LONG, "line_too_long")


@dataclass(frozen=True)
class Received:
    """The message as submitted (dot-unstuffed), or the reply and reject reason that refuse it."""

    content: bytes = b""
    refusal: tuple[str, str] | None = None


async def read_data(reader: asyncio.StreamReader, max_size: int | None) -> Received:
    """Read up to and including the terminating ``.<CRLF>`` line."""
    limit = max_size or 0
    # dot-stuffing adds at most one octet per line, and a line holds at least ".<CRLF>": a message
    # stuffed beyond 4/3 of the limit is too big whatever it holds, so it need not be kept
    keep = limit * 4 // 3 + len(DOT_LINE_END) if limit else 0
    held = bytearray()
    dropped = False
    before = CRLF  # the two octets before the next one read: the data starts at a line start
    while True:
        chunk, ends = await _next_chunk(reader, before)
        if not dropped:
            held += chunk
            if keep and len(held) > keep:
                dropped = True  # too big: read on to the end, keep nothing
                held.clear()
        if ends:
            break
        before = (before + chunk)[-2:]
    if dropped:
        return Received(refusal=TOO_BIG)
    return _check(_unstuff(bytes(held)), limit)


async def _next_chunk(reader: asyncio.StreamReader, before: bytes) -> tuple[bytes, bool]:
    """The next piece of data, and whether it ends the message (the ``.<CRLF>`` is not included)."""
    try:
        chunk = await reader.readuntil(DOT_LINE_END)
    except asyncio.LimitOverrunError as e:  # no ".<CRLF>" within what the reader holds: take it all
        return await reader.read(max(1, e.consumed)), False
    except asyncio.IncompleteReadError as e:  # the client went away mid-message
        raise asyncio.CancelledError from e
    if (before + chunk)[-5:-3] == CRLF:  # the dot starts a line: the end of the data
        return chunk[:-3], True
    return chunk, False


def _unstuff(stuffed: bytes) -> bytes:
    """Transparency (RFC 5321 4.5.2): a dot that starts a line was doubled by the client."""
    if stuffed.startswith(b"."):
        stuffed = stuffed[1:]
    return stuffed.replace(b"\r\n.", b"\r\n")


def _check(message: bytes, limit: int) -> Received:
    if limit and len(message) > limit:
        return Received(refusal=TOO_BIG)
    lines = message.split(CRLF)
    # the lines rejoined hold a CR or LF only if one was bare: two memchr scans, where counting CRs and
    # LFs (bytes.count of one byte is a plain loop in CPython) took four times as long
    joined = b"".join(lines)
    clean = (b"\n" not in joined and b"\r" not in joined and b"\0" not in message
             and max(map(len, lines)) <= MAX_LINE)
    if clean:  # the usual case, checked in C
        return Received(content=message)
    for line in lines:
        problem = _content_problem(line) or (LINE_TOO_LONG if len(line) > MAX_LINE else None)
        if problem is not None:
            return Received(refusal=problem)
    return Received(content=message)  # unreachable: a problem was counted above


def _content_problem(text: bytes) -> tuple[str, str] | None:
    """Bare LF, bare CR or NUL in a line without its CRLF; None when there is none."""
    if b"\n" in text:
        return replies.BARE_LF, "bare_line_ending"
    if b"\r" in text:
        return replies.BARE_CR, "bare_line_ending"
    if b"\0" in text:
        return replies.NUL, "nul_in_data"
    return None
