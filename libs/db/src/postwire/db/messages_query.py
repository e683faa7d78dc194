"""Finding an account's messages: the console's message log (docs/console.md).

One search box, as hosted relays have it: the text is matched against a message id (exactly), a
recipient address (exactly, case-insensitively), a tag (exactly) and the subject (as a substring,
case-insensitively); newest first, a page at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import cast, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from postwire.db.models import Message, Recipient


@dataclass(frozen=True)
class MessageRow:
    id: str
    subject: str
    mail_from: str
    created_at: datetime
    tags: list[str]
    recipients: list[tuple[str, str]]  # (address, status)


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(session: AsyncSession, account_id: str, q: str, limit: int,
                 offset: int = 0) -> list[MessageRow]:
    """The account's messages matching ``q`` (all when empty), newest first."""
    query = select(Message).where(Message.account_id == account_id)
    q = q.strip()
    if q:
        by_recipient = select(Recipient.message_id).where(Recipient.account_id == account_id,
                                                          func.lower(Recipient.address) == q.lower())
        query = query.where(or_(
            Message.id == q, Message.id.in_(by_recipient),
            Message.tags.op("@>")(cast(literal([q], JSONB), JSONB)),
            Message.subject.ilike("%" + _escape_like(q) + "%", escape="\\")))
    rows = list((await session.execute(
        query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit).offset(offset)
    )).scalars())
    states: dict[str, list[tuple[str, str]]] = {}
    if rows:
        found = await session.execute(select(Recipient.message_id, Recipient.address, Recipient.status).where(
            Recipient.message_id.in_([r.id for r in rows])).order_by(Recipient.address))
        for mid, address, status in found.all():
            states.setdefault(mid, []).append((address, status))
    return [MessageRow(r.id, r.subject, r.mail_from, r.created_at, list(r.tags or []), states.get(r.id, []))
            for r in rows]
