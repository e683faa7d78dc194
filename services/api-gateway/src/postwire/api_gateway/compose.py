"""Building the RFC 5322 message of a JSON submission (CPU work: callers run it in a thread)."""

from __future__ import annotations

from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from postwire.api_gateway.schemas import SendRequest


def message_id_header(message_id: str, domain: str) -> str:
    """The Message-ID carries the API id, so a bounce or reply can be traced back to the message."""
    return f"<{message_id}@{domain}>"


def compose(req: SendRequest, message_id: str, domain: str, now: datetime) -> bytes:
    """text and html become multipart/alternative; attachments wrap it in multipart/mixed. Bcc is left
    out of the headers on purpose: it only exists in the envelope."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = req.from_.header()
    if req.to:
        msg["To"] = [m.header() for m in req.to]
    if req.cc:
        msg["Cc"] = [m.header() for m in req.cc]
    if req.reply_to:
        msg["Reply-To"] = req.reply_to.header()
    if req.subject:
        msg["Subject"] = req.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id_header(message_id, domain)
    for name, value in req.headers.items():
        msg[name] = value
    _set_body(msg, req.text, req.html)
    for att in req.attachments:
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
