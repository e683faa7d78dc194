"""The parts of an archived message that SMTPeter's message calls hand out: the text and HTML bodies,
the header block, attachments and embedded (Content-ID) content. Pure: bytes in, values out."""

from __future__ import annotations

import email
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message


@dataclass(frozen=True)
class Part:
    """One attachment or embedded item, numbered from 0 in the order of the message."""

    rank: int
    name: str
    content_type: str
    content_id: str | None
    data: bytes


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_block(raw: bytes) -> str:
    """The header fields as they were stored, unfolded lines and all, without the body."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end + 2]
    return head.decode("utf-8", errors="replace")


def body_text(msg: EmailMessage, subtype: str) -> str:
    """The message's ``plain`` or ``html`` body as the reader sees it (transfer encoding and charset
    undone); empty when it has none."""
    part = msg.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown charset: the bytes as UTF-8, replaced where invalid
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def attachments(msg: EmailMessage) -> list[Part]:
    """Parts a reader would save: a file name or ``Content-Disposition: attachment``, and not embedded."""
    return _numbered(p for p in _leaves(msg) if not _embedded(p) and _is_attachment(p))


def embeds(msg: EmailMessage) -> list[Part]:
    """Content the HTML shows by ``cid:`` (a Content-ID, not marked as an attachment)."""
    return _numbered(p for p in _leaves(msg) if _embedded(p))


def pick(parts: list[Part], name_or_rank: str) -> Part | None:
    """By rank (digits) or else by name, as SMTPeter's ``…/MESSAGEID/NAME`` and ``…/NUMBER``."""
    if name_or_rank.isascii() and name_or_rank.isdigit():  # not "²", which int() refuses
        rank = int(name_or_rank)
        return parts[rank] if rank < len(parts) else None
    return next((p for p in parts if p.name == name_or_rank), None)


def _leaves(msg: EmailMessage) -> list[Message]:
    bodies = {id(b) for b in (msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",)))
              if b is not None}
    return [p for p in msg.walk() if not p.is_multipart() and id(p) not in bodies]


def _embedded(part: Message) -> bool:
    return bool(part.get("Content-ID")) and part.get_content_disposition() != "attachment"


def _is_attachment(part: Message) -> bool:
    return part.get_content_disposition() == "attachment" or part.get_filename() is not None


def _numbered(parts: Iterable[Message]) -> list[Part]:
    found: list[Part] = []
    for rank, p in enumerate(parts):
        payload = p.get_payload(decode=True)
        cid = p.get("Content-ID")
        found.append(Part(rank=rank, name=p.get_filename() or f"part-{rank}",
                          content_type=p.get_content_type(),
                          content_id=str(cid).strip().strip("<>") if cid else None,
                          data=payload if isinstance(payload, bytes) else b""))
    return found
