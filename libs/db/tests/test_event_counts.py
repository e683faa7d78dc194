"""event_counts against the real PostgreSQL: migrations 0010 and 0011 backfill it from the events already
stored, and its triggers keep it equal to the events counted, per tag and sending domain, whatever changes
them (any writer, deletions, updates, messages stored after their events or at the same time in another
transaction), including events whose tags are not a list of short strings, events without a message and
messages without a sender; and the queries' sending domain is the triggers'."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import literal, select, text

from postwire.core.ids import new_id
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.events_query import daily_counts, sending_domain, totals
from postwire.db.migrate import alembic_config, upgrade
from postwire.testing.event_counts import recounted, rolled_up
from postwire.testing.postgres import create_database

DAY0 = datetime(2026, 9, 1, tzinfo=UTC)
# tags as the recorder stores them and as no writer should, but one might: the counts must not care
TAGS: list[Any] = [["news"], ["news", "news"], ["a" * 200], ["b" * 201, "news"], [], "news", None, [1, "x"],
                   ["", "spring"], {"news": True}]
# senders of the messages, one per message in turn, and every fifth message not stored at all: two
# domains in any case, the null sender, an address without a domain, the last '@' deciding
SENDERS = ["shop@Example.COM", "news@example.com", "", "postmaster", "a@b@Sub.Example.org", "x@",
           "info@other.test"]
# senders as the triggers and the queries must read them alike; what the rule gives for each
EDGE_SENDERS = {
    "shop@Example.COM": "example.com", "": None, "postmaster": None, "x@": None,
    "a@b@Sub.Example.org": "sub.example.org", "@lead.example": "lead.example",
    "u@" + "d" * 253: "d" * 253, "u@" + "d" * 254: None, "ÄBC@Bücher.DE": "bücher.de",
    '"odd@quoted"@example.net': "example.net", "u@exa mple.com ": "exa mple.com ",
    "a@b\n@c.example": "c.example",
}


def _rows(account: str, n: int, first: int = 0) -> list[dict[str, Any]]:
    types = ("accepted", "delivered", "opened", "clicked", "bounced")
    rows = []
    for i in range(first, first + n):
        data: dict[str, Any] = {"attempt": 0, "metadata": {}}
        tags = TAGS[i % len(TAGS)]
        if tags is not None:
            data["tags"] = tags
        if i % 3 == 0:
            data["unique"] = True
        rows.append({"event_id": f"{account}.{i}", "account_id": account,
                     "message_id": f"{account}.m{i // 4}", "recipient": "r@example.test",
                     "type": types[i % len(types)],
                     # every 7 hours, so some land on the last and first microsecond of a UTC day
                     "at": DAY0 + timedelta(hours=7 * i) - timedelta(microseconds=i % 2),
                     "data": json.dumps(data)})
    return rows


def _messages(account: str, n: int, first: int = 0) -> list[dict[str, Any]]:
    """The message rows of _rows(account, n, first): each message's sender from SENDERS in turn, every
    fifth message left out."""
    return [{"id": f"{account}.m{k}", "account_id": account, "mail_from": SENDERS[k % len(SENDERS)]}
            for k in range(first // 4, (first + n + 3) // 4) if k % 5 != 4]


_INSERT = text("INSERT INTO events (event_id, account_id, message_id, recipient, type, at, data) "
               "VALUES (:event_id, :account_id, :message_id, :recipient, :type, :at, CAST(:data AS jsonb)) "
               "ON CONFLICT DO NOTHING")
_INSERT_MESSAGE = text("INSERT INTO messages (id, account_id, mail_from, subject, size, source, tags, "
                       "metadata) VALUES (:id, :account_id, :mail_from, '', 0, 'api', '[]', '{}') "
                       "ON CONFLICT DO NOTHING")


_WAITING = text("SELECT locktype FROM pg_locks WHERE pid = :pid AND NOT granted")


def _domains(counts: dict[tuple[str, str, Any, str], Any]) -> set[str]:
    return {domain for _, domain, _, _ in counts}


async def test_the_migration_counts_the_events_already_stored(pg_server: Any) -> None:
    url = create_database(pg_server)
    await asyncio.to_thread(upgrade, url, "0009")
    engine = make_engine(url)
    try:
        accounts = [new_id("a"), new_id("a")]
        async with make_sessionmaker(engine).begin() as s:
            for account in accounts:
                await s.execute(_INSERT_MESSAGE, _messages(account, 60))
                await s.execute(_INSERT, _rows(account, 60))
        await asyncio.to_thread(upgrade, url, "0011")
        async with make_sessionmaker(engine)() as s:
            for account in accounts:
                truth = await recounted(s, account)
                assert await rolled_up(s, account) == truth
                assert sum(n for (tag, domain, _, _), (n, _) in truth.items() if tag == domain == "") == 60
                assert _domains(truth) == {"", "example.com", "sub.example.org", "other.test"}
    finally:
        await engine.dispose()


async def _tag_counts(s: Any, account: str) -> dict[tuple[str, Any, str], tuple[int, int]]:
    """event_counts as 0010 shapes it (no domain)."""
    rows = await s.execute(text("SELECT tag, day, type, n, unique_n FROM event_counts "
                                "WHERE account_id = :a AND n <> 0"), {"a": account})
    return {(tag, day, type_): (int(n), int(u)) for tag, day, type_, n, u in rows.all()}


async def test_0011_counts_by_domain_what_0010_counted_and_downgrades(pg_server: Any) -> None:
    url = create_database(pg_server)
    await asyncio.to_thread(upgrade, url, "0010")
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    try:
        accounts = [new_id("a"), new_id("a")]  # the same senders' domains in both
        async with sessions.begin() as s:  # counted by 0010's triggers, per tag only
            for account in accounts:
                await s.execute(_INSERT_MESSAGE, _messages(account, 60))
                await s.execute(_INSERT, _rows(account, 60))
        await asyncio.to_thread(upgrade, url, "0011")
        async with sessions() as s:
            for account in accounts:
                truth = await recounted(s, account)
                assert await rolled_up(s, account) == truth
                assert "example.com" in _domains(truth)

        await asyncio.to_thread(command.downgrade, alembic_config(url), "0010")
        async with sessions.begin() as s:
            for account in accounts:
                every_domain = {(tag, day, type_): v for (tag, domain, day, type_), v
                                in (await recounted(s, account)).items() if domain == ""}
                assert await _tag_counts(s, account) == every_domain
                # 0010's triggers again, on messages no more
                await s.execute(_INSERT, _rows(account, 20, first=60))
                await s.execute(_INSERT_MESSAGE, _messages(account, 20, first=60))
        async with sessions() as s:
            for account in accounts:
                every_domain = {(tag, day, type_): v for (tag, domain, day, type_), v
                                in (await recounted(s, account)).items() if domain == ""}
                assert await _tag_counts(s, account) == every_domain

        await asyncio.to_thread(upgrade, url, "0011")
        async with sessions() as s:
            for account in accounts:
                assert await rolled_up(s, account) == await recounted(s, account)
    finally:
        await engine.dispose()


async def test_every_change_to_the_events_and_messages_moves_the_counts(sessions: Any) -> None:
    account = new_id("a")
    rows = _rows(account, 80)
    messages = _messages(account, 80)
    async with sessions.begin() as s:
        await s.execute(_INSERT_MESSAGE, messages[:8])
        await s.execute(_INSERT, rows[:50])
        await s.execute(_INSERT, rows[40:])  # ten of them again: not counted again
    async with sessions() as s:
        assert await rolled_up(s, account) == await recounted(s, account)
    async with sessions.begin() as s:  # messages stored after their events (and one of them again)
        await s.execute(_INSERT_MESSAGE, messages[7:])
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
    assert not any(type_ in ("opened", "bounced") for _, _, _, type_ in after)
    assert any(tag == "moved" and domain == "example.com" for tag, domain, _, _ in after)
    async with sessions.begin() as s:  # a sender changed, a message gone: its events keep only ''
        await s.execute(text("UPDATE messages SET mail_from = 'new@Moved.example' WHERE id = :id"),
                        {"id": f"{account}.m1"})
        await s.execute(text("DELETE FROM messages WHERE id = :id"), {"id": f"{account}.m0"})
    async with sessions() as s:
        after = await rolled_up(s, account)
        assert after == await recounted(s, account)
    assert "moved.example" in _domains(after)
    other = new_id("a")
    async with sessions() as s:  # counted in the inserting transaction: rolled back with it
        await s.execute(_INSERT_MESSAGE, _messages(other, 5))
        await s.execute(_INSERT, _rows(other, 5))
        assert "example.com" in _domains(await rolled_up(s, other))
        await s.rollback()
    async with sessions() as s:
        assert await rolled_up(s, other) == {}


# one statement for any number of messages, or of events (one per message), as the recorder writes them
_MESSAGES = text("INSERT INTO messages (id, account_id, mail_from, subject, size, source, tags, metadata) "
                 "SELECT id, :account, 'shop@Example.COM', '', 0, 'api', '[]', '{}' "
                 "FROM unnest(CAST(:ids AS text[])) AS id")
_EVENTS = text("INSERT INTO events (event_id, account_id, message_id, recipient, type, at, data) "
               "SELECT id || '.delivered', :account, id, 'r@example.test', 'delivered', :at, '{}' "
               "FROM unnest(CAST(:ids AS text[])) AS id")


async def test_a_message_and_its_event_written_at_once_count_once(sessions: Any) -> None:
    """Two transactions, one storing a message and one an event of it, each before the other commits,
    in either order, and with one of them a bulk statement (more message ids than are locked one by
    one): the event is counted under the message's domain exactly once."""
    for message_first, bulk in ((True, False), (False, False), (True, True), (False, True)):
        account = new_id("a")
        ids = [f"{account}.m{k}" for k in range(1001 if bulk else 1)]
        first, second = (_MESSAGES, ids), (_EVENTS, ids[:1])
        if not message_first:
            first, second = (_EVENTS, ids), (_MESSAGES, ids[:1])
        async with sessions() as one, sessions() as two, sessions() as watch:
            await one.execute(first[0], {"account": account, "ids": first[1], "at": DAY0})
            pid = await two.scalar(text("SELECT pg_backend_pid()"))

            async def then(statement: Any, ids: list[str], account: str = account) -> None:
                await two.execute(statement, {"account": account, "ids": ids, "at": DAY0})
                await two.commit()

            later = asyncio.create_task(then(*second))
            # the sentinel: ``two`` waits for a lock ``one`` holds (on the message id, or on the table)
            while (waiting := await watch.scalar(_WAITING, {"pid": pid})) is None:
                await watch.rollback()
                await asyncio.sleep(0.01)
            await watch.rollback()
            await one.commit()
            await later
        assert waiting == ("relation" if bulk else "advisory"), (message_first, bulk)
        async with sessions() as s:
            counted = await rolled_up(s, account)
            assert counted == await recounted(s, account), (message_first, bulk)
            assert counted[("", "example.com", DAY0.date(), "delivered")] == (1, 0), (message_first, bulk)


async def test_the_queries_read_the_sending_domain_as_the_triggers_count_it(sessions: Any) -> None:
    account = new_id("a")
    day = DAY0 + timedelta(days=40)
    messages = [{"id": f"{account}.m{k}", "account_id": account, "mail_from": sender}
                for k, sender in enumerate(EDGE_SENDERS)]
    events = [{"event_id": f"{account}.{k}", "account_id": account, "message_id": f"{account}.m{k}",
               "recipient": "r@example.test", "type": "delivered", "at": day + timedelta(hours=k),
               "data": json.dumps({"tags": [f"t{k}"]})} for k in range(len(messages))]
    async with sessions.begin() as s:
        await s.execute(_INSERT_MESSAGE, messages)
        await s.execute(_INSERT, events)
    async with sessions() as s:
        counted = {tag: domain for tag, domain, _, _ in await rolled_up(s, account) if tag and domain}
        assert await rolled_up(s, account) == await recounted(s, account)
        for k, (sender, expected) in enumerate(EDGE_SENDERS.items()):
            queried = await s.scalar(select(sending_domain(literal(sender))))
            assert queried == counted.get(f"t{k}") == expected, sender
        for domain in {d for d in EDGE_SENDERS.values() if d}:
            n = sum(1 for d in EDGE_SENDERS.values() if d == domain)
            whole = await totals(s, account, day, day + timedelta(days=1), domain=domain.upper())
            part = await totals(s, account, day - timedelta(hours=1), day + timedelta(days=1, hours=1),
                                domain=domain)  # the partial days: from the events, through the messages
            days = await daily_counts(s, account, day, day + timedelta(days=1), domain=domain)
            assert whole["deliveries"] == part["deliveries"] == days[0]["delivered"] == n, domain
