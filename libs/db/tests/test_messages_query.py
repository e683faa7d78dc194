"""The message log's search against the real PostgreSQL: each way of matching, together, newest first, a
page at a time, one account only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from postwire.core.ids import new_id
from postwire.db.messages_query import search
from postwire.db.models import Message, Recipient

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


async def _messages(sessions: Any, account: str, specs: list[tuple[str, list[str], list[str]]],
                    ) -> list[str]:
    """(subject, tags, recipients) each, one minute apart (the last two at the same moment); their ids."""
    ids = []
    async with sessions.begin() as s:
        for i, (subject, tags, rcpts) in enumerate(specs):
            mid = new_id()
            at = T0 + timedelta(minutes=min(i, len(specs) - 2))
            s.add(Message(id=mid, account_id=account, mail_from="shop@example.test", subject=subject, size=1,
                          source="api", tags=tags, metadata_={}, created_at=at))
            for rcpt in rcpts:
                s.add(Recipient(message_id=mid, address=rcpt, account_id=account, status="queued", attempts=0,
                                updated_at=at))
            ids.append(mid)
    return ids


async def test_search_matches_each_way_newest_first_in_one_account(sessions: Any) -> None:
    account, other = new_id("a"), new_id("a")
    ids = await _messages(sessions, account, [
        ("Good NEWS, everyone", [], ["jane@example.test"]),
        ("Your order", ["news"], ["Jane@Example.test", "joe@example.test"]),
        ("50% off everything", ["spring", "news"], []),
        ("500 items in stock", [], []),
        ("Welcome_home", [], ["joe@example.test"]),
        ("Welcomexhome", ["news"], []),
        ("Re: news", [], ["jane@example.test"]),
    ])
    newest_first = ids[::-1] if ids[-1] > ids[-2] else [ids[-2], ids[-1], *ids[-3::-1]]
    await _messages(sessions, other, [("news for the other account", ["news"], ["jane@example.test"]),
                                      (ids[3], [ids[3]], [])])

    async def found(q: str, limit: int = 50, offset: int = 0) -> list[str]:
        async with sessions() as s:
            return [row.id for row in await search(s, account, q, limit, offset)]

    assert await found("") == newest_first
    assert await found("", 3, 2) == newest_first[2:5]
    assert await found(ids[3]) == [ids[3]]  # the id; the other account's subject and tag holding it: no
    assert await found("JANE@example.TEST") == [ids[6], ids[1], ids[0]]  # the address, in any case
    # the tag (exactly) and the subject (a part, in any case), each message once
    news = [m for m in newest_first if m in (ids[0], ids[1], ids[2], ids[5], ids[6])]
    assert await found("news") == news
    assert await found("news", 2, 1) == news[1:3]
    assert await found("news", 10, 5) == []
    assert await found("50%") == [ids[2]]  # % and _ are themselves, not patterns
    assert await found("e_h") == [ids[4]]
    assert await found("spring") == [ids[2]]
    assert await found("sprin") == []  # a tag matches whole
    assert await found("  welcome") == [m for m in newest_first if m in (ids[4], ids[5])]
    async with sessions() as s:
        [row] = await search(s, account, ids[1], 50)
    assert (row.subject, row.tags, row.recipients) == (
        "Your order", ["news"], [("Jane@Example.test", "queued"), ("joe@example.test", "queued")])
