"""The console's pages on a big account: 1,000,000 events over 30 days (and a second account of 200,000),
each page requested over HTTP from the real gateway with a logged-in user, p50/p95 per page. Not a test.

    scripts/uv run python bench/console.py [--events 1000000] [--other-events 200000] [--runs 20]
    scripts/uv run python bench/console.py --pgdata /tmp/pwc --explain   # keep the seeded cluster, plans

Starts the embedded PostgreSQL as the tests do (postwire.testing.postgres), applies the Alembic history,
and seeds with a few set-based statements (generate_series, no ORM rows): messages with one to five
recipients, tags from a small set and varied subjects, then per recipient ``accepted``; ``delivered`` for
most, ``deferred`` then ``delivered`` for some, ``failed`` or ``delivered`` then ``bounced`` (with Sisimai
reasons) for about 3 %; ``opened``/``clicked`` for a share; a few complaints; the suppressions of the hard
failures. ``events.data`` holds what ``postwire.db.events_query.event_proto_data`` stores for such an
event (checked on one event of each type). Events are inserted in ``at`` order, both accounts mixed, as
the recorder writes them. Then a nats-server and the gateway (``serve``) start in-process, and each
page variant is fetched once to warm up and ``--runs`` times measured. ``sql`` is the time spent in the
database during the request (cursor execute to result), the rest is Python: routing, ORM, templates.

With ``--pgdata DIR`` the cluster stays in DIR and a later run reuses its data (after applying any new
revision, whose time is printed: a migration's backfill on this much data). ``--explain`` prints
EXPLAIN (ANALYZE, BUFFERS) of every statement a page ran, with the values it ran with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from postwire.api_gateway.console.sessions import COOKIE, LIFETIME
from postwire.api_gateway.service import serve
from postwire.api_gateway.settings import ApiSettings
from postwire.core.events import make_event
from postwire.db import accounts, console_users
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.events_query import all_rates, event_proto_data, rates
from postwire.db.migrate import upgrade
from postwire.testing.nats import NatsServer
from postwire.testing.postgres import start_postgres

DATABASE = "console_bench"
BIG, OTHER = "bench-big", "bench-other"
EVENTS_PER_MESSAGE = 3.53  # what the seed below makes on average (the counts are printed)

# ------------------------------------------------------------------------------------------------ seed

TOPICS = ["gardening", "kitchen", "cycling", "photography", "travel", "coffee", "running", "books", "music",
          "camping", "baking", "football", "design", "gaming", "fitness", "wine", "cinema", "jazz", "yoga",
          "sailing", "climbing", "painting", "knitting", "chess", "birding", "pottery", "skiing", "surfing",
          "tea", "architecture", "history", "science", "podcasts", "fashion", "pets", "cars", "crafts",
          "Zanzibar"]
NAMES = ["Anna", "Bram", "Chloe", "Daan", "Emma", "Finn", "Julia", "Lucas", "Mila", "Noah", "Sara", "Tim"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
          "Microsoft Outlook 16.0.17726; Microsoft Outlook 16.0.17726", "GoogleImageProxy"]

# one account's messages; rare tag "vip" on 1 in 1000, "Zanzibar" in about 1 in 230 subjects
_MESSAGES = """
CREATE TEMP TABLE bench_messages AS
SELECT lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0')
           || substr(md5(:account || '/' || g), 1, 14) AS id, *
FROM (
    SELECT g, CAST(:account AS text) AS account_id,
           CAST(:now AS timestamptz) - random() * (:days * interval '1 day') AS created_at,
           (ARRAY['news@shop.example', 'noreply@shop.example', 'billing@shop.example'])[1 + g % 3]
               AS mail_from,
           g % 6 AS kind, (random() * 1000000)::int AS base, 5000 + (random() * 60000)::int AS size,
           CASE WHEN random() < 0.85 THEN 1 WHEN random() < 0.67 THEN 2 WHEN random() < 0.8 THEN 3
                ELSE 5 END AS n_rcpt,
           (CAST(:topics AS text[]))[1 + (random() * 37.2)::int] AS topic,
           (CAST(:topics AS text[]))[1 + (random() * 36.99)::int] AS topic2,
           (CAST(:names AS text[]))[1 + g % 12] AS name,
           random() < 0.001 AS vip, random() < 0.5 AS promo_news, random() < 0.5 AS with_metadata
    FROM generate_series(1, :n) g
) m
"""
_MESSAGES_INSERT = """
INSERT INTO messages (id, account_id, mail_from, subject, size, source, tags, metadata, template_id,
                      created_at)
SELECT id, account_id, mail_from, subject, size, source, tags, metadata, NULL, created_at
FROM bench_messages ORDER BY created_at
"""
_MESSAGES_DETAILS = """
ALTER TABLE bench_messages ADD COLUMN subject text, ADD COLUMN tags jsonb, ADD COLUMN metadata jsonb,
                           ADD COLUMN source text;
UPDATE bench_messages SET
    subject = CASE kind
        WHEN 0 THEN 'Your order #' || (100000 + g) || ' has shipped'
        WHEN 1 THEN 'Invoice ' || to_char(created_at, 'YYYY-MM') || '-' || g || ' for your account'
        WHEN 2 THEN 'Welcome to Acme, ' || name || '!'
        WHEN 3 THEN 'Weekly digest: ' || topic || ' and ' || topic2
        WHEN 4 THEN 'Reset your password'
        ELSE initcap(topic) || ' deals: up to ' || (10 + g % 60) || '% off' END,
    tags = (CASE kind
        WHEN 0 THEN '["receipt"]'::jsonb WHEN 1 THEN '["invoice"]'::jsonb
        WHEN 2 THEN '["welcome", "onboarding"]'::jsonb WHEN 3 THEN '["newsletter", "weekly"]'::jsonb
        WHEN 4 THEN '["password-reset"]'::jsonb
        ELSE CASE WHEN promo_news THEN '["promo", "newsletter"]'::jsonb ELSE '["promo"]'::jsonb END END)
        || CASE WHEN vip THEN '["vip"]'::jsonb ELSE '[]'::jsonb END,
    metadata = CASE WHEN with_metadata THEN jsonb_build_object('customer', (base % 90000)::text)
               ELSE '{}'::jsonb END,
    source = CASE WHEN g % 4 = 0 THEN 'smtp' ELSE 'api' END
"""
# each recipient's fate: failed (1.5 %), delivered then bounced (1.5 %), deferred then delivered (7 %),
# delivered; opens for 45 % of the delivered (up to three), clicks for a third of those (one or two links)
_RECIPIENTS = """
CREATE TEMP TABLE bench_rcpt AS
SELECT r.*,
       CASE WHEN fate_r < 0.015 THEN 'failed' WHEN fate_r < 0.03 THEN 'bounced'
            WHEN fate_r < 0.10 THEN 'deferred' ELSE 'delivered' END AS fate,
       CASE WHEN t3 < 0.55 THEN 'userunknown' WHEN t3 < 0.75 THEN 'mailboxfull'
            WHEN t3 < 0.85 THEN 'hostunknown' WHEN t3 < 0.95 THEN 'filtered' ELSE 'spamdetected' END
           AS reason,
       created_at + (1 + t1 * 20) * interval '1 second'
           + CASE WHEN fate_r >= 0.03 AND fate_r < 0.10 THEN (600 + t2 * 3000) * interval '1 second'
                  ELSE interval '0' END AS done_at,
       CASE WHEN fate_r >= 0.015 AND open_r < 0.45
            THEN 1 + (open_r < 0.15)::int + (open_r < 0.05)::int ELSE 0 END AS n_open,
       CASE WHEN fate_r >= 0.015 AND open_r < 0.45 AND click_r < 0.35
            THEN 1 + (click_r < 0.1)::int ELSE 0 END AS n_click
FROM (
    SELECT m.id AS message_id, m.account_id, m.created_at, m.tags, m.metadata, m.subject, m.mail_from,
           m.size, m.source, d.domain,
           CASE WHEN i = 0 AND m.g % 20 = 0 THEN 'User' ELSE 'user' END
               || ((m.base + i * 7919) % :addresses) || '@' || d.domain AS address,
           random() AS fate_r, random() AS open_r, random() AS click_r, random() AS t1, random() AS t2,
           random() AS t3
    FROM bench_messages m
    CROSS JOIN LATERAL generate_series(0, m.n_rcpt - 1) i
    CROSS JOIN LATERAL (SELECT (ARRAY['gmail.example', 'outlook.example', 'yahoo.example', 'proton.example',
                                      'corp.example'])[1 + (m.base + i) % 5] AS domain) d
) r
"""
_RECIPIENTS_INSERT = """
INSERT INTO recipients (message_id, address, account_id, status, smtp_code, enhanced_status, response,
                        mx_host, attempts, updated_at)
SELECT message_id, address, account_id,
       CASE fate WHEN 'deferred' THEN 'delivered' ELSE fate END,
       CASE WHEN fate IN ('failed', 'bounced') THEN 550 ELSE 250 END,
       CASE WHEN fate IN ('failed', 'bounced') THEN '5.1.1' ELSE '2.0.0' END,
       CASE WHEN fate IN ('failed', 'bounced') THEN '550 5.1.1 user unknown' ELSE '250 2.0.0 Ok' END,
       'mx1.' || domain, CASE fate WHEN 'deferred' THEN 2 ELSE 1 END, done_at
FROM bench_rcpt ORDER BY created_at
"""
# events.data as event_proto_data builds it: attempt, tags, metadata always; the other fields only when
# not their default (so no "unique": false, no link_index 0); hardbounce always for failed and bounced
_BASE = "'attempt', {attempt}, 'tags', tags, 'metadata', metadata"
_DELIVERY = ("'smtp_code', {code}, 'enhanced_status', {status}, 'response', {response}, "
             "'mx_host', 'mx1.' || domain")
_STATUS = ("CASE reason WHEN 'userunknown' THEN '5.1.1' WHEN 'hostunknown' THEN '5.1.2' "
           "WHEN 'mailboxfull' THEN '5.2.2' ELSE '5.7.1' END")
_HARD = "reason IN ('userunknown', 'hostunknown')"
_EVENTS = f"""
CREATE TEMP TABLE bench_events AS
SELECT * FROM (
    SELECT message_id, address, account_id, 'accepted' AS type, 0 AS attempt, created_at AS at,
           jsonb_build_object({_BASE.format(attempt=0)}, 'mail_from', mail_from, 'subject', subject,
                              'size', size, 'source', source) AS data
    FROM bench_rcpt
    UNION ALL
    SELECT message_id, address, account_id, 'deferred', 0, created_at + (5 + t1 * 50) * interval '1 second',
           jsonb_build_object({_BASE.format(attempt=0)}, {_DELIVERY.format(
               code=451, status="'4.7.1'", response="'451 4.7.1 Greylisted, try again later'")},
               'reason', 'blocked')
    FROM bench_rcpt WHERE fate = 'deferred'
    UNION ALL
    SELECT message_id, address, account_id, 'delivered', (fate = 'deferred')::int, done_at,
           jsonb_build_object({_BASE.format(attempt="(fate = 'deferred')::int")}, {_DELIVERY.format(
               code=250, status="'2.0.0'",
               response="'250 2.0.0 Ok: queued as ' || substr(md5(address), 1, 10)")})
    FROM bench_rcpt WHERE fate <> 'failed'
    UNION ALL
    SELECT message_id, address, account_id, 'failed', 0, done_at,
           jsonb_build_object({_BASE.format(attempt=0)}, {_DELIVERY.format(
               code=550, status=_STATUS,
               response=f"'550 ' || {_STATUS} || ' <' || address || '>: ' || reason")},
               'reason', reason, 'hardbounce', {_HARD})
    FROM bench_rcpt WHERE fate = 'failed'
    UNION ALL
    SELECT message_id, address, account_id, 'bounced', 0, done_at + (60 + t2 * 3600) * interval '1 second',
           jsonb_build_object({_BASE.format(attempt=0)}, 'smtp_code', 550, 'enhanced_status', {_STATUS},
               'response', {_STATUS} || ' <' || address || '>: ' || reason, 'reason', reason,
               'hardbounce', {_HARD}, 'remote_mta', 'mx1.' || domain)
    FROM bench_rcpt WHERE fate = 'bounced'
    UNION ALL
    SELECT message_id, address, account_id, 'complained', 0,
           done_at + (3600 + t3 * 86400) * interval '1 second',
           jsonb_build_object({_BASE.format(attempt=0)}, 'feedback_type', 'abuse',
                              'remote_mta', 'fbl.' || domain)
    FROM bench_rcpt WHERE fate = 'delivered' AND t3 < 0.002
    UNION ALL
    SELECT message_id, address, account_id, 'opened', k,
           done_at + (k + 1) * (300 + t2 * 20000) * interval '1 second',
           jsonb_build_object({_BASE.format(attempt="k")}, 'client_ip', '198.51.100.' || (k + 1),
                              'user_agent', (CAST(:agents AS text[]))[1 + (k + (t1 * 5)::int) % 5])
               || CASE WHEN k = 0 THEN '{{"unique": true}}'::jsonb ELSE '{{}}'::jsonb END
    FROM bench_rcpt CROSS JOIN LATERAL generate_series(0, n_open - 1) k
    UNION ALL
    SELECT message_id, address, account_id, 'clicked', k,
           done_at + (900 + k * 60 + t2 * 20000) * interval '1 second',
           jsonb_build_object({_BASE.format(attempt="k")}, 'url', 'https://shop.example/p/' || (k + 1),
                              'client_ip', '198.51.100.' || (k + 1), 'unique', true,
                              'user_agent', (CAST(:agents AS text[]))[1 + (t1 * 4)::int])
               || CASE WHEN k > 0 THEN jsonb_build_object('link_index', k) ELSE '{{}}'::jsonb END
    FROM bench_rcpt CROSS JOIN LATERAL generate_series(0, n_click - 1) k
) e WHERE at <= :now
"""
_EVENTS_INSERT = """
INSERT INTO events (event_id, account_id, message_id, recipient, type, at, data)
SELECT message_id || '.' || type || '.' || attempt || '.' || lower(address), account_id, message_id, address,
       type, at, data
FROM bench_all_events ORDER BY at
"""
_SUPPRESSIONS = """
INSERT INTO suppressions (account_id, address, reason, source, source_event_id, created_at)
SELECT DISTINCT ON (account_id, lower(address)) account_id, lower(address), reason, 'bounce',
       message_id || '.' || fate || '.0.' || lower(address), done_at
FROM bench_rcpt WHERE fate IN ('failed', 'bounced') AND reason IN ('userunknown', 'hostunknown')
ORDER BY account_id, lower(address), done_at
ON CONFLICT DO NOTHING
"""


async def _exec(conn: Any, sql: str, **params: Any) -> None:
    await conn.execute(text(sql), params)


async def seed(engine: AsyncEngine, account_id: str, other_id: str, events: int, other_events: int,
               now: datetime) -> None:
    """Both accounts' messages, recipients, suppressions and events, the events in one ``at`` order."""
    async with engine.begin() as conn:
        await _exec(conn, "SELECT setseed(0.42)")
        for aid, n_events, addresses in ((account_id, events, 60_000), (other_id, other_events, 15_000)):
            started = time.perf_counter()
            for name in ("bench_messages", "bench_rcpt", "bench_events"):
                await _exec(conn, f"DROP TABLE IF EXISTS {name}")
            await _exec(conn, _MESSAGES, account=aid, now=now, days=30,
                        n=round(n_events / EVENTS_PER_MESSAGE), topics=TOPICS, names=NAMES)
            for statement in _MESSAGES_DETAILS.split(";"):
                await _exec(conn, statement)
            await _exec(conn, _MESSAGES_INSERT)
            await _exec(conn, _RECIPIENTS, addresses=addresses)
            await _exec(conn, _RECIPIENTS_INSERT)
            await _exec(conn, _SUPPRESSIONS)
            await _exec(conn, _EVENTS, agents=AGENTS, now=now)
            if aid == account_id:
                await _exec(conn, "CREATE TEMP TABLE bench_all_events AS TABLE bench_events")
            else:
                await _exec(conn, "INSERT INTO bench_all_events TABLE bench_events")
            print(f"  {aid}: generated in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        await _exec(conn, _EVENTS_INSERT)
        print(f"  events inserted in {time.perf_counter() - started:.1f} s")
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        started = time.perf_counter()
        await auto.execute(text("VACUUM ANALYZE"))
        print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


async def check_event_data(engine: AsyncEngine, account_id: str) -> None:
    """One seeded event of each type has exactly the keys event_proto_data gives such an event."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT DISTINCT ON (type) type, data FROM events WHERE account_id = :a ORDER BY type, at DESC"),
            {"a": account_id})).all()
    fields: dict[str, dict[str, Any]] = {
        "accepted": dict(mail_from="a@b", subject="s", size=1, source="api"),
        "deferred": dict(smtp_code=451, enhanced_status="4.7.1", response="r", mx_host="m", reason="blocked"),
        "delivered": dict(smtp_code=250, enhanced_status="2.0.0", response="r", mx_host="m"),
        "failed": dict(smtp_code=550, enhanced_status="5.1.1", response="r", mx_host="m", reason="x"),
        "bounced": dict(smtp_code=550, enhanced_status="5.1.1", response="r", reason="x", remote_mta="m"),
        "complained": dict(feedback_type="abuse", remote_mta="m"),
    }
    for type_, data in rows:
        if type_ in ("opened", "clicked"):
            continue  # their optional keys (unique, link_index) differ per event by design
        ev = make_event(type_, account_id=account_id, message_id="m", recipient="r@x", **fields[type_])
        expected = set(event_proto_data(ev))
        assert set(data) == expected, (type_, sorted(data), sorted(expected))


# ------------------------------------------------------------------------------------------- measure


@dataclass
class SqlLog:
    """Statements the gateway ran (through any engine of this process) and the time each took."""

    statements: list[tuple[str, Any, float]] = field(default_factory=list)
    on: bool = False

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if self.on:
            self.statements.append((statement, params, time.perf_counter() - conn.info["bench_started"]))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, Any, float]]]:
        self.statements, self.on = [], True
        try:
            yield self.statements
        finally:
            self.on = False


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered) + 0.5) - 1))]


async def measure(client: httpx.AsyncClient, sql: SqlLog, engine: AsyncEngine,
                  variants: list[tuple[str, str]], runs: int,
                  explain: bool) -> list[tuple[str, str, float, float, float, int]]:
    out = []
    for name, path in variants:
        r = await client.get(path)  # warm-up (and the check that the page answers)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        took, in_sql = [], []
        for _ in range(runs):
            with sql.recording() as statements:
                started = time.perf_counter()
                r = await client.get(path)
                took.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, (path, r.status_code)
            in_sql.append(sum(s[2] for s in statements) * 1000)
        out.append((name, path, statistics.median(took), _pct(took, 0.95), statistics.median(in_sql),
                    len(r.content)))
        print(f"{name:34} p50 {out[-1][2]:7.1f} ms  p95 {out[-1][3]:7.1f} ms  sql p50 {out[-1][4]:7.1f} ms"
              f"  ({len(r.content):,} bytes)", flush=True)
        if explain:
            await explain_statements(engine, statements)
    return out


async def explain_statements(engine: AsyncEngine, statements: list[tuple[str, Any, float]]) -> None:
    async with engine.connect() as conn:
        for statement, params, took in statements:
            if took < 0.002 and "events" not in statement and "messages" not in statement:
                continue  # the session lookup and the like
            raw = await conn.get_raw_connection()
            plan = await raw.driver_connection.fetch(  # type: ignore[union-attr]
                "EXPLAIN (ANALYZE, BUFFERS) " + statement, *(params or ()))
            print("    " + " ".join(statement.split())[:400])
            for row in plan:
                print("      " + row[0])


async def pick(engine: AsyncEngine, account_id: str) -> dict[str, str]:
    """Values to search for: a message of two days ago with several events, a recipient address with
    several messages (in another case than stored), an existing tag."""
    async with engine.connect() as conn:
        mid = await conn.scalar(text(
            "SELECT message_id FROM events WHERE account_id = :a AND type = 'clicked' "
            "AND at < now() - interval '2 days' ORDER BY at DESC LIMIT 1"), {"a": account_id})
        address = await conn.scalar(text(
            "SELECT address FROM recipients WHERE account_id = :a AND address LIKE 'User%' "
            "ORDER BY updated_at DESC LIMIT 1"), {"a": account_id})
    return {"message_id": str(mid), "address": str(address).upper()}


def variants(picked: dict[str, str]) -> list[tuple[str, str]]:
    today = datetime.now(UTC).date()
    lo, hi = today - timedelta(days=20), today - timedelta(days=7)
    return [
        ("floor: a static file", "/console/static/console.css"),
        ("overview today", "/console/?period=today"),
        ("overview 7 days", "/console/?period=7d"),
        ("overview 30 days", "/console/?period=30d"),
        ("overview 30 days, tag newsletter", "/console/?period=30d&tag=newsletter"),
        ("overview 30 days, tag vip (rare)", "/console/?period=30d&tag=vip"),
        ("overview custom 14 days", f"/console/?period=custom&start={lo}&end={hi}"),
        ("search empty", "/console/messages"),
        ("search empty, page 20", "/console/messages?page=20"),
        ("search message id", f"/console/messages?q={picked['message_id']}"),
        ("search address", f"/console/messages?q={picked['address']}"),
        ("search tag newsletter", "/console/messages?q=newsletter"),
        ("search tag vip (rare)", "/console/messages?q=vip"),
        ("search subject word (common)", "/console/messages?q=digest"),
        ("search subject word (rare)", "/console/messages?q=zanzibar"),
        ("search subject word (none)", "/console/messages?q=zeppelin"),
        ("message page", f"/console/messages/{picked['message_id']}"),
        ("bounces", "/console/bounces"),
        ("bounces, reason mailboxfull", "/console/bounces?reason=mailboxfull"),
        ("bounces.csv", "/console/bounces.csv"),
        ("suppressions", "/console/suppressions"),
        ("suppressions, prefix", "/console/suppressions?q=user12"),
    ]


async def measure_rates(sessions: Any, account_id: str, runs: int) -> None:
    """The recorder's rates job (every active account and sending domain over 24 h, each minute) and
    /v1/stats' rates of one account (1 h, 24 h, 7 days): what they cost PostgreSQL at this volume."""
    for name, job in (("rates job (all accounts, 24 h)", lambda s: all_rates(s, timedelta(hours=24))),
                      ("/v1/stats rates (one account)", lambda s: rates(s, account_id))):
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            async with sessions() as s:
                await job(s)
            times.append((time.perf_counter() - started) * 1000)
        times = sorted(times[1:])
        print(f"{name:<34} p50 {statistics.median(times):7.1f} ms   max {times[-1]:7.1f} ms")


# ----------------------------------------------------------------------------------------------- main


def _database(server: Any) -> tuple[str, bool]:
    """The bench database's URL and whether it existed already."""
    existed = DATABASE in server.psql("SELECT datname FROM pg_database;")
    if not existed:
        server.psql(f"CREATE DATABASE {DATABASE};")
    return str(server.get_uri(DATABASE)), existed


async def run(a: argparse.Namespace, pgdata: Path) -> None:
    server = start_postgres(pgdata)
    try:
        url, existed = _database(server)
        started = time.perf_counter()
        await asyncio.to_thread(upgrade, url)
        print(f"migrations applied in {time.perf_counter() - started:.1f} s")
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        async with engine.connect() as conn:
            big = await conn.scalar(text("SELECT id FROM accounts WHERE name = :n"), {"n": BIG})
        if big is None:
            if existed:
                raise SystemExit(f"{DATABASE} exists without its seed: remove {pgdata}")
            async with sessions.begin() as s:
                big = (await accounts.create_account(s, BIG)).account_id
                other = (await accounts.create_account(s, OTHER)).account_id
            print(f"seeding {a.events:,} + {a.other_events:,} events")
            await seed(engine, big, other, a.events, a.other_events, datetime.now(UTC))
        async with engine.connect() as conn:
            counts = (await conn.execute(text(
                "SELECT a.name, (SELECT count(*) FROM events e WHERE e.account_id = a.id), "
                "(SELECT count(*) FROM messages m WHERE m.account_id = a.id), "
                "(SELECT count(*) FROM recipients r WHERE r.account_id = a.id), "
                "(SELECT count(*) FROM suppressions s WHERE s.account_id = a.id) "
                "FROM accounts a WHERE a.name IN (:b, :o) ORDER BY a.name"), {"b": BIG, "o": OTHER})).all()
        for name, n_events, n_messages, n_rcpt, n_supp in counts:
            print(f"  {name}: {n_events:,} events, {n_messages:,} messages, {n_rcpt:,} recipients, "
                  f"{n_supp:,} suppressions")
        await check_event_data(engine, big)
        await measure_rates(sessions, big, a.runs)
        async with sessions.begin() as s:
            user, _ = await console_users.create_user(s, big, f"bench-{time.time_ns()}@example.test", "admin")
            token, _ = await console_users.open_session(s, user, LIFETIME)
        picked = await pick(engine, big)

        sql = SqlLog()
        sql.install()
        with tempfile.TemporaryDirectory(prefix="pwcn") as d:
            async with NatsServer(Path(d) / "js") as nats_server:
                settings = ApiSettings(nats_url=nats_server.url, database_url=url, http_port=0,
                                       message_id_domain="bench.postwire.test")
                stop = asyncio.Event()
                port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(serve(settings, stop, started=port.set_result))
                await asyncio.wait({task, port}, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    task.result()
                try:
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.result()}",
                                                 timeout=120) as client:
                        client.cookies.set(COOKIE, token, path="/console")
                        print(f"\n{a.runs} runs per page after one warm-up; machine: "
                              f"{os.cpu_count()} cores")
                        chosen = [v for v in variants(picked) if not a.only or a.only in v[0]]
                        await measure(client, sql, engine, chosen, a.runs, a.explain)
                finally:
                    stop.set()
                    await task
        await engine.dispose()
    finally:
        server.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events of the measured account")
    p.add_argument("--other-events", type=int, default=200_000, help="events of a second account")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--pgdata", type=Path, help="keep the cluster here and reuse its data in later runs")
    p.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE every statement of each page")
    p.add_argument("--only", default="", help="only the variants whose name contains this")
    a = p.parse_args()
    if a.pgdata is not None:
        a.pgdata.mkdir(parents=True, exist_ok=True)
        asyncio.run(run(a, a.pgdata.resolve() / "pgdata"))
        return
    with tempfile.TemporaryDirectory(prefix="pwcb") as d:  # short: the socket path must fit 107 bytes
        asyncio.run(run(a, Path(d) / "pgdata"))


if __name__ == "__main__":
    main()
