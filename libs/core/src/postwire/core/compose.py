"""Building an RFC 5322 message from fields (CPU work: callers run it in a thread or a worker).

The API's JSON shapes (POST /v1/messages and SMTPeter's POST /v1/send) and a personalised message's
rendering for one recipient (the dispatcher's sender) describe a message as fields; each becomes a
:class:`Draft`, built by :func:`build`.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from postwire.core.addresses import Mailbox


@dataclass(frozen=True)
class Part:
    """An attachment: file name, content type (``type/subtype``) and bytes."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Draft:
    """A message as fields, already validated (addresses parsed, no line breaks in header values)."""

    from_: Mailbox
    to: Sequence[Mailbox] = ()
    cc: Sequence[Mailbox] = ()
    reply_to: Sequence[Mailbox] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    headers: Sequence[tuple[str, str]] = ()  # extra fields, in order
    attachments: Sequence[Part] = field(default_factory=tuple)


def message_id_header(message_id: str, domain: str) -> str:
    """The Message-ID carries the API id, so a bounce or reply can be traced back to the message."""
    return f"<{message_id}@{domain}>"


def build(draft: Draft, message_id: str, domain: str, now: datetime) -> bytes:
    """text and html become multipart/alternative; attachments wrap it in multipart/mixed."""
    plain = _build_plain(draft, message_id, domain, now)
    return plain if plain is not None else _build_with_email_package(draft, message_id, domain, now)


# --- the usual message, written directly -----------------------------------------------------------------
#
# The email package's EmailMessage parses every header it is given through its header registry and
# generates the message with refolding: about a millisecond for a 10 KB text message, the largest single
# cost of an API send. Most messages are ASCII header fields that fit on one line and a text and/or HTML
# body without attachments; those are written here in the same layout (tests/test_compose.py parses both
# and compares), and everything else goes through the email package.

MAX_HEADER_LINE = 78
_BARE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]*")  # atext and spaces: needs no quoting


def _build_plain(draft: Draft, message_id: str, domain: str, now: datetime) -> bytes | None:
    """The message, or None when it needs the email package (attachments, encoded or folded headers)."""
    if draft.attachments:
        return None
    fields: list[tuple[str, str]] = [("From", _mailbox(draft.from_))]
    for name, boxes in (("To", draft.to), ("Cc", draft.cc), ("Reply-To", draft.reply_to)):
        if boxes:
            fields.append((name, ", ".join(_mailbox(m) for m in boxes)))
    if draft.subject:
        fields.append(("Subject", draft.subject))
    fields += [("Date", format_datetime(now)), ("Message-ID", message_id_header(message_id, domain)),
               *draft.headers]
    lines = [f"{name}: {value}" for name, value in fields]
    if not all(line.isascii() and line.isprintable() and len(line) <= MAX_HEADER_LINE for line in lines):
        return None
    try:
        parts = [_part(subtype, body) for subtype, body in (("plain", draft.text), ("html", draft.html))
                 if body is not None] or [_part("plain", "")]
    except UnicodeEncodeError:  # a lone surrogate from JSON: let the email package say what it thinks
        return None
    head = "\r\n".join(lines).encode("ascii") + b"\r\n"
    if len(parts) == 1:
        return head + _single(parts[0])
    boundary = f"==============={secrets.randbelow(10**19):019d}=="
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return (head + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'.encode()
            + b"MIME-Version: 1.0\r\n\r\n" + body + b"--" + boundary.encode() + b"--\r\n")


def _mailbox(box: Mailbox) -> str:
    """``Name <addr>`` or ``addr``; a name that would need quoting or encoding gives a non-ASCII marker,
    which sends the message to the email package."""
    if not box.display_name:
        return box.address
    if _BARE_NAME.fullmatch(box.display_name) is None or box.display_name != box.display_name.strip():
        return "\x00"
    return f"{box.display_name} <{box.address}>"


def _part(subtype: str, text: str) -> bytes:
    """A text part's header fields and body, encoded as the email package chooses: 7bit (ASCII) or 8bit
    (UTF-8) when no line is longer than 78 octets, else quoted-printable (binascii's, in C); CRLF."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    raw = text.encode("utf-8")
    if max(map(len, raw.split(b"\n"))) <= MAX_HEADER_LINE:
        cte, body = ("7bit" if text.isascii() else "8bit"), raw
    else:
        cte, body = "quoted-printable", binascii.b2a_qp(raw, istext=True)
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
            .encode() + body.replace(b"\n", b"\r\n"))


def _single(part: bytes) -> bytes:
    """One part as the whole message body: its fields join the message's, then MIME-Version."""
    fields, _, body = part.partition(b"\r\n\r\n")
    return fields + b"\r\nMIME-Version: 1.0\r\n\r\n" + body


def _build_with_email_package(draft: Draft, message_id: str, domain: str, now: datetime) -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = draft.from_.header()
    if draft.to:
        msg["To"] = [m.header() for m in draft.to]
    if draft.cc:
        msg["Cc"] = [m.header() for m in draft.cc]
    if draft.reply_to:
        msg["Reply-To"] = [m.header() for m in draft.reply_to]
    if draft.subject:
        msg["Subject"] = draft.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_header(message_id, domain)
    for name, value in draft.headers:
        msg[name] = value
    _set_body(msg, draft.text, draft.html)
    for att in draft.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(att.content, maintype=maintype, subtype=subtype, filename=att.filename)
    return msg.as_bytes()


def _set_body(msg: EmailMessage, text: str | None, html: str | None) -> None:
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:  # attachments only (POST /v1/send allows it): an empty text part in front of them
        msg.set_content("")
