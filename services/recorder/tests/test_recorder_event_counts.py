"""The per-day counts (event_counts) as the recorder leaves them: exactly the stored events counted, each
once, per tag and sending domain, however often and however concurrently the same events are redelivered
(and whichever comes first, a message's accepted event or its others), and /v1/stats' functions answer
from them what counting the events answers."""

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


def _message(account: str, day: int, tags: list[str], opens: int = 1,
             sender: str = "shop@example.test") -> list[envelope_pb2.Event]:
    """One message's events on DAY0 + ``day``, sent by ``sender``: accepted, delivered, opens (the first
    unique) and a click; the last open lands one microsecond before the next UTC day."""
    mid, rcpt = new_message_id(), f"r{new_id()[-6:]}@example.test"
    at = DAY0 + timedelta(days=day, hours=9)

    def ev(type_: str, when: datetime, attempt: int = 0, **fields: Any) -> envelope_pb2.Event:
        e = make_event(type_, account_id=account, message_id=mid, recipient=rcpt, attempt=attempt, tags=tags,
                       **fields)
        e.at.FromDatetime(when)
        return e

    out = [ev("accepted", at, subject="Hello", mail_from=sender),
           ev("delivered", at + timedelta(seconds=5), smtp_code=250)]
    out += [ev("opened", at + timedelta(hours=k + 1), attempt=k, unique=k == 0) for k in range(opens)]
    out.append(ev("opened", DAY0 + timedelta(days=day + 1) - timedelta(microseconds=1), attempt=opens))
    out.append(ev("clicked", at + timedelta(hours=2), unique=True, url="https://example.test/"))
    return out


# the events of the messages sent from :domain (NULL: every event), the sending domain written as the
# rule says rather than as the code does
_OF_DOMAIN = ("(CAST(:domain AS text) IS NULL OR EXISTS (SELECT FROM messages m WHERE m.id = message_id "
              "AND m.account_id = events.account_id AND position('@' IN m.mail_from) > 0 "
              "AND lower(split_part(m.mail_from, '@', -1)) = lower(CAST(:domain AS text))))")


async def _totals_from_events(sessions: Any, account: str, start: datetime, end: datetime,
                              tag: str | None, domain: str | None = None) -> dict[str, int]:
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
            f"jsonb_build_array(CAST(:tag AS text))) AND {_OF_DOMAIN}"),
            {"a": account, "lo": start, "hi": end, "tag": tag, "domain": domain})).one()
    names = ("messages", "deliveries", "bounces", "opens", "unique_opens", "clicks", "unique_clicks")
    return dict(zip(names, (int(n) for n in row), strict=True))


def _raw_daily(rows: list[tuple[Any, str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for day, type_, n in rows:
        out.setdefault(day.isoformat(), {})[type_] = int(n)
    return out


async def _counted_from_events(sessions: Any, account: str, start: datetime, end: datetime,
                               tag: str | None, domain: str | None = None) -> dict[str, dict[str, int]]:
    """Counted straight from the events: what daily_counts answered before event_counts existed."""
    async with sessions() as s:
        rows = await s.execute(text(
            "SELECT date(timezone('UTC', at)), type, count(*) FROM events WHERE account_id = :a "
            "AND at >= :lo AND at < :hi AND (CAST(:tag AS text) IS NULL OR data -> 'tags' @> "
            f"jsonb_build_array(CAST(:tag AS text))) AND {_OF_DOMAIN} GROUP BY 1, 2"),
            {"a": account, "lo": start, "hi": end, "tag": tag, "domain": domain})
        return _raw_daily(list(rows.all()))


async def test_counts_are_the_events_counted_once_whatever_is_redelivered(sessions) -> None:
    account = new_id("a")
    first = _message(account, 0, ["news", "spring"], opens=2) + _message(account, 1, ["news", "news"])
    second = (_message(account, 1, [LONG_TAG, "spring"], sender="news@Mail.Example.test")
              + _message(account, 2, [], sender=""))
    third = (_message(account, 2, ["news"], opens=3)
             + _message(account, 3, ["spring"], sender="x@mail.example.test"))
    # a message whose other events are recorded before its accepted one (another recorder's batch, a
    # redelivery after a failed batch); and opens of a message never recorded
    late = _message(account, 3, ["news"], sender="late@mail.example.test")
    stray = [ev for ev in _message(account, 1, ["news"], sender="who@mail.example.test")
             if ev.type == "opened"]

    await record_batch(sessions, first)
    await record_batch(sessions, first)  # redelivered whole
    await record_batch(sessions, first[:3] + second + second[:2])  # duplicates across and within a batch
    # the same events from several recorders at once: each insert waits for the other's commit, then skips
    await asyncio.gather(*(record_batch(sessions, third[:n]) for n in (len(third), len(third), 4, 7)))
    await record_batch(sessions, late[1:] + stray)
    await record_batch(sessions, late[:1] + late[2:4])

    async with sessions() as s:
        truth, rolled = await recounted(s, account), await rolled_up(s, account)
    assert rolled == truth
    assert sum(n for (tag, domain, _, _), (n, _) in rolled.items() if tag == domain == "") == len(
        first + second + third + late + stray)
    assert rolled[("", "", DAY0.date(), "opened")] == (3, 1)
    assert {domain for _, domain, _, _ in rolled} == {"", "example.test", "mail.example.test"}
    # the late message's events are all under its domain, its accepted event's and the others
    assert rolled[("news", "mail.example.test", (DAY0 + timedelta(days=3)).date(), "delivered")] == (1, 0)

    start, end = DAY0, DAY0 + timedelta(days=4)
    ranges = [(start, end), (start + timedelta(hours=10), end - timedelta(hours=3)),
              (start + timedelta(days=1, hours=8), start + timedelta(days=1, hours=12)),
              (start + timedelta(days=1) - timedelta(microseconds=1), start + timedelta(days=2))]
    for lo, hi in ranges:
        for tag in (None, "news", "spring", LONG_TAG, "absent"):
            for domain in (None, "example.test", "MAIL.example.test", "absent.test"):
                async with sessions() as s:
                    days = await daily_counts(s, account, lo, hi, tag, domain)
                    sums = await totals(s, account, lo, hi, tag, domain)
                expected = await _counted_from_events(sessions, account, lo, hi, tag, domain)
                got = {d["day"]: {k: v for k, v in d.items() if k != "day" and v} for d in days}
                assert {k: v for k, v in got.items() if v} == expected, (lo, hi, tag, domain)
                assert sums == await _totals_from_events(sessions, account, lo, hi, tag, domain), (
                    lo, hi, tag, domain)
    async with sessions() as s:
        whole = await totals(s, account, start, end)
        by_domain = await totals(s, account, start, end, domain="mail.example.test")
    # opens: 2 + 1 + 1 + 1 + 3 + 1 + 1 pixel fetches plus the last-microsecond one of each of the seven
    # messages, and the two of the message never recorded
    assert whole == {"messages": 7, "deliveries": 7, "bounces": 0, "opens": 19, "unique_opens": 8,
                     "clicks": 7, "unique_clicks": 7}
    assert by_domain == {"messages": 3, "deliveries": 3, "bounces": 0, "opens": 6, "unique_opens": 3,
                         "clicks": 3, "unique_clicks": 3}
