"""event_counts against the real PostgreSQL: migration 0010 backfills it from the events already stored,
and its triggers keep it equal to the events counted whatever changes them (any writer, deletions,
updates), including events whose tags are not a list of short strings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from postwire.core.ids import new_id
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.migrate import upgrade
from postwire.testing.event_counts import recounted, rolled_up
from postwire.testing.postgres import create_database

DAY0 = datetime(2026, 9, 1, tzinfo=UTC)
# tags as the recorder stores them and as no writer should, but one might: the counts must not care
TAGS: list[Any] = [["news"], ["news", "news"], ["a" * 200], ["b" * 201, "news"], [], "news", None, [1, "x"],
                   ["", "spring"], {"news": True}]


def _rows(account: str, n: int) -> list[dict[str, Any]]:
    types = ("accepted", "delivered", "opened", "clicked", "bounced")
    rows = []
    for i in range(n):
        data: dict[str, Any] = {"attempt": 0, "metadata": {}}
        tags = TAGS[i % len(TAGS)]
        if tags is not None:
            data["tags"] = tags
        if i % 3 == 0:
            data["unique"] = True
        rows.append({"event_id": f"{account}.{i}", "account_id": account, "message_id": f"m{i // 4}",
                     "recipient": "r@example.test", "type": types[i % len(types)],
                     # every 7 hours, so some land on the last and first microsecond of a UTC day
                     "at": DAY0 + timedelta(hours=7 * i) - timedelta(microseconds=i % 2),
                     "data": json.dumps(data)})
    return rows


_INSERT = text("INSERT INTO events (event_id, account_id, message_id, recipient, type, at, data) "
               "VALUES (:event_id, :account_id, :message_id, :recipient, :type, :at, CAST(:data AS jsonb)) "
               "ON CONFLICT DO NOTHING")


async def test_the_migration_counts_the_events_already_stored(pg_server: Any) -> None:
    url = create_database(pg_server)
    await asyncio.to_thread(upgrade, url, "0009")
    engine = make_engine(url)
    try:
        accounts = [new_id("a"), new_id("a")]
        async with make_sessionmaker(engine).begin() as s:
            for account in accounts:
                await s.execute(_INSERT, _rows(account, 60))
        await asyncio.to_thread(upgrade, url)
        async with make_sessionmaker(engine)() as s:
            for account in accounts:
                truth = await recounted(s, account)
                assert await rolled_up(s, account) == truth
                assert sum(n for (tag, _, _), (n, _) in truth.items() if tag == "") == 60
    finally:
        await engine.dispose()


async def test_every_change_to_the_events_moves_the_counts(sessions: Any) -> None:
    account = new_id("a")
    rows = _rows(account, 80)
    async with sessions.begin() as s:
        await s.execute(_INSERT, rows[:50])
        await s.execute(_INSERT, rows[40:])  # ten of them again: not counted again
    async with sessions() as s:
        assert await rolled_up(s, account) == await recounted(s, account)
    async with sessions.begin() as s:
        await s.execute(text("DELETE FROM events WHERE account_id = :a AND type = 'opened'"), {"a": account})
        await s.execute(text("UPDATE events SET type = 'failed', at = at + interval '3 days', "
                             "data = data || '{\"tags\": [\"moved\"]}' "
                             "WHERE account_id = :a AND type = 'bounced'"), {"a": account})
    async with sessions() as s:
        after = await rolled_up(s, account)
        assert after == await recounted(s, account)
    assert not any(type_ in ("opened", "bounced") for _, _, type_ in after)
    assert any(tag == "moved" for tag, _, _ in after)
    other = new_id("a")
    async with sessions() as s:  # counted in the inserting transaction: rolled back with it
        await s.execute(_INSERT, _rows(other, 5))
        assert len(await rolled_up(s, other)) > 0
        await s.rollback()
    async with sessions() as s:
        assert await rolled_up(s, other) == {}
