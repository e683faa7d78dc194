"""Finding an account's messages: the console's message log (docs/console.md).

One search box, as hosted relays have it: the text is matched against a message id (exactly), a
recipient address (exactly, case-insensitively), a tag (exactly) and the subject (as a substring,
case-insensitively); newest first, a page at a time.

Each kind of match is its own query with the index that serves it (the primary key,
ix_recipients_account_address_lower, ix_messages_tags, ix_messages_account_created), each giving at most
the newest ``offset + limit`` ids, and the page is cut from their union: one query OR-ing the four could
use none of them and read every message of the account. A substring of the subject is served by the
trigram index ix_messages_subject_trgm where PostgreSQL has pg_trgm (migration 0013; the planner picks it
for a rare word). Without it, as in the embedded PostgreSQL, it is a scan of the account's messages,
newest first, that stops at the page's last match, so only a rare or absent word reads them all
(docs/console.md, "Speed").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, cast, func, literal, select, text, union
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


def _matching(account_id: str, q: str, wanted: int) -> Select[tuple[str]]:
    """The ids of the newest ``wanted`` messages matching ``q`` in each way, together (duplicates once)."""
    newest = (Message.created_at.desc(), Message.id.desc())
    ids = select(Message.id, Message.created_at).where(Message.account_id == account_id)
    by_recipient = select(Recipient.message_id).where(Recipient.account_id == account_id,
                                                      func.lower(Recipient.address) == q.lower())
    # ILIKE is lower() on both sides and LIKE (in a multi-byte encoding, as PostgreSQL implements it),
    # written out because LIKE on the lowered text runs about twice as fast per row
    in_subject = func.lower(Message.subject).like(func.lower("%" + _escape_like(q) + "%"), escape="\\")
    found = union(
        ids.where(Message.id == q),
        ids.where(Message.id.in_(by_recipient)).order_by(*newest).limit(wanted),
        ids.where(Message.tags.op("@>")(cast(literal([q], JSONB), JSONB))).order_by(*newest).limit(wanted),
        ids.where(in_subject).order_by(*newest).limit(wanted),
    ).subquery()
    return select(found.c.id)


async def search(session: AsyncSession, account_id: str, q: str, limit: int,
                 offset: int = 0) -> list[MessageRow]:
    """The account's messages matching ``q`` (all when empty), newest first."""
    query = select(Message).where(Message.account_id == account_id)
    q = q.strip()
    if q:
        # The best plan depends on q (a word in no subject: a parallel scan; a common one: newest first
        # until the page is full; an address with a few messages: its index), and a prepared statement's
        # generic plan, used after a few executions, would be one plan for every q: plan it for this one.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        query = query.where(Message.id.in_(_matching(account_id, q, offset + limit)))
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
