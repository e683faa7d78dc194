"""Per-message option headers: ``x-smtpeter-*`` (the hosted service Postwire replaces) and Postwire's
own ``X-Postwire-*``, read at acceptance and removed before the message is stored, so they never reach
a recipient.

Recognised (case-insensitive), each with either prefix: ``inlinecss``, ``trackclicks``, ``trackopens``,
``trackbounces``, ``preventscam``, ``unsubscribe`` (true/false, yes/no, on/off, 1/0), ``tags``
(comma-separated) and ``stream`` (``transactional`` or ``bulk``, the message's lane: postwire.core.lanes).
A header with a value we cannot read is still removed and reported in :attr:`OptionHeaders.problems`;
the login's or request's default then applies. docs/smtp.md lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from postwire.core.lanes import parse_stream

PREFIXES: Final = ("x-smtpeter-", "x-postwire-")
SWITCHES: Final = {
    "inlinecss": "inline_css",
    "trackclicks": "track_clicks",
    "trackopens": "track_opens",
    "trackbounces": "track_bounces",
    "preventscam": "prevent_scam",
}
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})
HEADER_END: Final = re.compile(rb"\r?\n\r?\n")  # the blank line ending the header block
_FIELD: Final = re.compile(rb"^(x-(?:smtpeter|postwire)-([a-z]+))[ \t]*:(.*)$", re.IGNORECASE | re.DOTALL)
_TAG: Final = re.compile(r"^[^\s;]{1,100}$")
MAX_TAGS: Final = 20


@dataclass
class OptionHeaders:
    """What the headers asked for; None means "not given, use the default"."""

    switches: dict[str, bool] = field(default_factory=dict)  # SendOptions field name → value
    tags: list[str] = field(default_factory=list)
    stream: str | None = None  # "transactional" | "bulk"
    # Postwire's one-click List-Unsubscribe although not bulk (docs/unsubscribe.md); not a login default
    unsubscribe: bool | None = None
    problems: list[str] = field(default_factory=list)


def parse_switch(value: str) -> bool | None:
    v = value.strip().lower()
    return True if v in _TRUE else False if v in _FALSE else None


def parse_tags(value: str, problems: list[str] | None = None) -> list[str]:
    """Comma-separated tags; ones with spaces or ';' are dropped (and reported)."""
    tags: list[str] = []
    for raw in value.split(","):
        tag = raw.strip()
        if not tag:
            continue
        if _TAG.match(tag) and tag not in tags:
            tags.append(tag)
        elif problems is not None:
            problems.append(f"tag {tag[:40]!r} has spaces or ';' or is too long")
    return tags[:MAX_TAGS]


def header_fields(head: bytes) -> list[bytes]:
    """Header fields with their continuation lines, each with its line endings. Pieces are joined once
    per field: appending to a bytes field line by line is quadratic in a hostile folded header."""
    fields: list[list[bytes]] = []
    for line in head.splitlines(keepends=True):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    return [b"".join(pieces) for pieces in fields]


def take_option_headers(raw: bytes) -> tuple[bytes, OptionHeaders]:
    """``raw`` without its option headers, and what they said. Only the top-level header block is
    looked at. A message that is all header (RFC 5322 allows no body) has no empty line: its whole
    content is the header block."""
    end = HEADER_END.search(raw)
    if end is None:
        if not raw.endswith(b"\n"):
            return raw, OptionHeaders()
        content, found = take_option_headers(raw + b"\r\n")
        return content[:-2], found
    head, rest = raw[: end.start()], raw[end.start():]
    found = OptionHeaders()
    kept: list[bytes] = []
    removed = False
    for line in header_fields(head):
        m = _FIELD.match(line.rstrip(b"\r\n"))
        name = m.group(2).decode("ascii").lower() if m else ""
        if m is None or (name not in SWITCHES and name not in ("tags", "stream", "unsubscribe")):
            kept.append(line)
            continue
        removed = True
        value = re.sub(r"\r?\n[ \t]", " ", m.group(3).decode("utf-8", "replace")).strip()
        if name == "tags":
            found.tags += [t for t in parse_tags(value, found.problems) if t not in found.tags]
            continue
        if name == "stream":
            stream = parse_stream(value)
            if stream is None:
                found.problems.append(f"{m.group(1).decode()}: {value[:40]!r} is not transactional or bulk")
            else:
                found.stream = stream
            continue
        switch = parse_switch(value)
        if switch is None:
            found.problems.append(f"{m.group(1).decode()}: {value[:40]!r} is not true or false")
        elif name == "unsubscribe":
            found.unsubscribe = switch
        else:
            found.switches[SWITCHES[name]] = switch
    if not removed:
        return raw, found
    return _join(kept, rest), found


def _join(kept: list[bytes], rest: bytes) -> bytes:
    """Reassemble: the header block's last line has no line ending of its own (``rest`` starts with the
    blank line's), so a removed last field must not leave the new last line with a doubled ending."""
    new_head = b"".join(kept)
    if new_head.endswith(b"\r\n"):
        new_head = new_head[:-2]
    elif new_head.endswith(b"\n"):
        new_head = new_head[:-1]
    return new_head + rest
