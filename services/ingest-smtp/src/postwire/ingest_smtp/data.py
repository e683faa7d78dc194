"""Reading the message after 354: the end of data is ``<CRLF>.<CRLF>`` and nothing else.

This replaces aiosmtpd 1.4's DATA loop for two reasons:

- SMTP smuggling (CVE-2023-51764 and friends). aiosmtpd (since 1.4.5) already splits lines at CRLF only,
  so ``<LF>.<LF>``, ``<CR>.<CR>`` or ``<LF>.<CRLF>`` never end the data; but it passed bare LF and bare CR
  on inside the message, where a next hop that reads them as line ends could split it. Here any bare CR
  or LF refuses the whole message at the end of data (Postfix's ``smtpd_forbid_bare_newline = reject``),
  so a smuggled second message is never queued, alone or as part of the first.
- Memory. aiosmtpd keeps each line as its own bytearray (about 60 bytes of overhead per line, so a
  message at the size limit made of empty lines costs some 30 times the limit). Here the message grows in
  one buffer, which never exceeds the size limit: past it, or once the message is refused for any other
  reason, input is read and dropped until the end of data, so the client sees the reply in sync.

Lines are limited to 998 characters plus CRLF after un-stuffing (RFC 5321 4.5.3.1.6); the StreamReader's
own limit (aiosmtpd's 1001) keeps what a single read can hold small.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from postwire.ingest_smtp import replies

MAX_LINE = 998
CRLF = b"\r\n"
END = b".\r\n"
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
    message = bytearray()
    size = 0
    in_long_line = False  # inside a line longer than the reader's limit, read in pieces
    problem: tuple[str, str] | None = None
    while True:
        try:
            chunk = await reader.readuntil(CRLF)
            complete = True
        except asyncio.LimitOverrunError as e:
            # a line longer than the reader's limit: take what is buffered (never half of a CRLF)
            chunk = await reader.read(e.consumed)
            complete = False
        except asyncio.IncompleteReadError as e:  # the client went away mid-message
            raise asyncio.CancelledError from e
        if not in_long_line:
            if chunk == END and complete:
                break
            if chunk[:1] == b".":
                chunk = chunk[1:]  # transparency (RFC 5321 4.5.2)
        in_long_line = not complete
        size += len(chunk)
        if limit and size > limit:
            problem = TOO_BIG  # outranks anything found before; past it, nothing more is kept
        elif problem is not None:
            pass
        elif not complete:  # too long, whatever else it holds
            problem = _content_problem(chunk) or LINE_TOO_LONG
        elif (n := len(chunk)) <= MAX_LINE + 2 and chunk.find(b"\n") == n - 1 and \
                chunk.find(b"\r") == n - 2 and b"\0" not in chunk:
            message += chunk  # the usual case: one CRLF at the end, within the line limit, no NUL
            continue
        else:
            problem = _content_problem(chunk[:-2]) or LINE_TOO_LONG
        message.clear()  # refused: drop what we held at once, and keep reading to stay in sync
    if problem is not None:
        return Received(refusal=problem)
    return Received(content=bytes(message))


def _content_problem(text: bytes) -> tuple[str, str] | None:
    """Bare LF, bare CR or NUL in (a piece of) a line without its CRLF; None when there is none."""
    if b"\n" in text:
        return replies.BARE_LF, "bare_line_ending"
    if b"\r" in text:
        return replies.BARE_CR, "bare_line_ending"
    if b"\0" in text:
        return replies.NUL, "nul_in_data"
    return None
