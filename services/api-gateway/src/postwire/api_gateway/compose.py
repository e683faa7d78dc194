"""Building the RFC 5322 message of a JSON submission (CPU work: callers run it in a thread).

Both JSON shapes — POST /v1/messages (:class:`SendRequest`) and the SMTPeter-compatible POST /v1/send —
describe a message as fields; each is turned into a :class:`Draft` and built by :func:`build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from postwire.api_gateway.addresses import Mailbox
from postwire.api_gateway.schemas import SendRequest


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


def compose(req: SendRequest, message_id: str, domain: str, now: datetime) -> bytes:
    """The message of a POST /v1/messages request. Bcc is left out of the headers on purpose: it only
    exists in the envelope."""
    draft = Draft(from_=req.from_, to=req.to, cc=req.cc, reply_to=[req.reply_to] if req.reply_to else (),
                  subject=req.subject, text=req.text, html=req.html, headers=list(req.headers.items()),
                  attachments=[Part(a.filename, a.content_type, a.content) for a in req.attachments])
    return build(draft, message_id, domain, now)


def build(draft: Draft, message_id: str, domain: str, now: datetime) -> bytes:
    """text and html become multipart/alternative; attachments wrap it in multipart/mixed."""
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
