"""The per-day counts (event_counts) as the recorder leaves them: exactly the stored events counted, each
once, however often and however concurrently the same events are redelivered, and /v1/stats' functions
answer from them what counting the events answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from postwire.core.events import make_event
from postwire.core.ids import new_id, new_message_id
from postwire.db.events_query import daily_counts, totals
from postwire.recorder.recorder import record_batch
from postwire.testing.event_counts import recounted, rolled_up
from postwire.v1 import envelope_pb2

DAY0 = datetime(2026, 10, 5, tzinfo=UTC)
LONG_TAG = "t" * 250  # longer than event_counts counts per tag: asked for, it is counted from the events


def _message(account: str, day: int, tags: list[str], opens: int = 1) -> list[envelope_pb2.Event]:
    """One message's events on DAY0 + ``day``: accepted, delivered, opens (the first unique) and a click;
    the last open lands one microsecond before the next UTC day."""
    mid, rcpt = new_message_id(), f"r{new_id()[-6:]}@example.test"
    at = DAY0 + timedelta(days=day, hours=9)

    def ev(type_: str, when: datetime, attempt: int = 0, **fields: Any) -> envelope_pb2.Event:
        e = make_event(type_, account_id=account, message_id=mid, recipient=rcpt, attempt=attempt, tags=tags,
                       **fields)
        e.at.FromDatetime(when)
        return e

    out = [ev("accepted", at, subject="Hello", mail_from="shop@example.test"),
           ev("delivered", at + timedelta(seconds=5), smtp_code=250)]
    out += [ev("opened", at + timedelta(hours=k + 1), attempt=k, unique=k == 0) for k in range(opens)]
    out.append(ev("opened", DAY0 + timedelta(days=day + 1) - timedelta(microseconds=1), attempt=opens))
    out.append(ev("clicked", at + timedelta(hours=2), unique=True, url="https://example.test/"))
    return out


async def _totals_from_events(sessions: Any, account: str, start: datetime, end: datetime,
                              tag: str | None) -> dict[str, int]:
    """The totals counted straight from the events, ``unique`` read as a boolean as totals() did."""
    unique = "(data ->> 'unique')::boolean IS TRUE"
    async with sessions() as s:
        row = (await s.execute(text(
            "SELECT count(*) FILTER (WHERE type = 'accepted'), count(*) FILTER (WHERE type = 'delivered'), "
            "count(*) FILTER (WHERE type IN ('failed', 'bounced')), count(*) FILTER (WHERE type = 'opened'), "
            f"count(*) FILTER (WHERE type = 'opened' AND {unique}), "
            "count(*) FILTER (WHERE type = 'clicked'), "
            f"count(*) FILTER (WHERE type = 'clicked' AND {unique}) FROM events WHERE account_id = :a "
            "AND at >= :lo AND at < :hi AND (CAST(:tag AS text) IS NULL OR data -> 'tags' @> "
            "jsonb_build_array(CAST(:tag AS text)))"),
            {"a": account, "lo": start, "hi": end, "tag": tag})).one()
    names = ("messages", "deliveries", "bounces", "opens", "unique_opens", "clicks", "unique_clicks")
    return dict(zip(names, (int(n) for n in row), strict=True))


def _raw_daily(rows: list[tuple[Any, str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for day, type_, n in rows:
        out.setdefault(day.isoformat(), {})[type_] = int(n)
    return out


async def _counted_from_events(sessions: Any, account: str, start: datetime, end: datetime,
                               tag: str | None) -> dict[str, dict[str, int]]:
    """Counted straight from the events: what daily_counts answered before event_counts existed."""
    async with sessions() as s:
        rows = await s.execute(text(
            "SELECT date(timezone('UTC', at)), type, count(*) FROM events WHERE account_id = :a "
            "AND at >= :lo AND at < :hi AND (CAST(:tag AS text) IS NULL OR data -> 'tags' @> "
            "jsonb_build_array(CAST(:tag AS text))) GROUP BY 1, 2"),
            {"a": account, "lo": start, "hi": end, "tag": tag})
        return _raw_daily(list(rows.all()))


async def test_counts_are_the_events_counted_once_whatever_is_redelivered(sessions) -> None:
    account = new_id("a")
    first = _message(account, 0, ["news", "spring"], opens=2) + _message(account, 1, ["news", "news"])
    second = _message(account, 1, [LONG_TAG, "spring"]) + _message(account, 2, [])
    third = _message(account, 2, ["news"], opens=3) + _message(account, 3, ["spring"])

    await record_batch(sessions, first)
    await record_batch(sessions, first)  # redelivered whole
    await record_batch(sessions, first[:3] + second + second[:2])  # duplicates across and within a batch
    # the same events from several recorders at once: each insert waits for the other's commit, then skips
    await asyncio.gather(*(record_batch(sessions, third[:n]) for n in (len(third), len(third), 4, 7)))

    async with sessions() as s:
        truth, rolled = await recounted(s, account), await rolled_up(s, account)
    assert rolled == truth
    assert sum(n for (tag, _, _), (n, _) in rolled.items() if tag == "") == len(first + second + third)
    assert ("", DAY0.date(), "opened") in rolled and rolled[("", DAY0.date(), "opened")] == (3, 1)

    start, end = DAY0, DAY0 + timedelta(days=4)
    ranges = [(start, end), (start + timedelta(hours=10), end - timedelta(hours=3)),
              (start + timedelta(days=1, hours=8), start + timedelta(days=1, hours=12)),
              (start + timedelta(days=1) - timedelta(microseconds=1), start + timedelta(days=2))]
    for lo, hi in ranges:
        for tag in (None, "news", "spring", LONG_TAG, "absent"):
            async with sessions() as s:
                days = await daily_counts(s, account, lo, hi, tag)
                sums = await totals(s, account, lo, hi, tag)
            expected = await _counted_from_events(sessions, account, lo, hi, tag)
            got = {d["day"]: {k: v for k, v in d.items() if k != "day" and v} for d in days}
            assert {k: v for k, v in got.items() if v} == expected, (lo, hi, tag)
            assert sums == await _totals_from_events(sessions, account, lo, hi, tag), (lo, hi, tag)
    async with sessions() as s:
        whole = await totals(s, account, start, end)
    # opens: 2 + 1 + 1 + 1 + 3 + 1 pixel fetches plus the last-microsecond one of each of the six messages
    assert whole == {"messages": 6, "deliveries": 6, "bounces": 0, "opens": 15, "unique_opens": 6,
                     "clicks": 6, "unique_clicks": 6}
