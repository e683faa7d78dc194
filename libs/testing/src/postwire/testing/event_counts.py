"""What ``event_counts`` holds for an account, and what counting its events gives, in the same shape, so a
test can compare the two (the rollup must be exactly the events counted, whatever wrote them)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# (tag, domain, day, type) -> (events, of them unique); '' for every tag, every domain
Counts = dict[tuple[str, str, date, str], tuple[int, int]]

# The sending domain of each event, written another way than the triggers and the queries write it (the
# rule, not a copy of their expression): the part of its message's sender after the last '@', when it is
# 1 to 253 characters, lower-cased; none without a message (of the event's account) or such a part.
# Then every event under each ('' or a tag that ``data->'tags' @> '["tag"]'`` finds, '' or its domain),
# as /v1/stats filters; unique as a JSON true.
_RECOUNTED = text("""
WITH ev AS (
    SELECT e.at, e.type, e.data, lower(substring(m.mail_from, '@([^@]{1,253})$')) AS domain
    FROM events e LEFT JOIN messages m ON m.id = e.message_id AND m.account_id = e.account_id
    WHERE e.account_id = :account
), tags AS (
    SELECT '' AS tag
    UNION
    SELECT t #>> '{}'
    FROM ev, jsonb_array_elements(CASE jsonb_typeof(data -> 'tags') WHEN 'array' THEN data -> 'tags'
                                                                    ELSE '[]'::jsonb END) AS t
    WHERE jsonb_typeof(t) = 'string' AND t #>> '{}' <> '' AND length(t #>> '{}') <= :longest
), domains AS (
    SELECT '' AS domain
    UNION
    SELECT domain FROM ev WHERE domain IS NOT NULL
)
SELECT tags.tag, domains.domain, date(timezone('UTC', ev.at)), ev.type, count(*),
       count(*) FILTER (WHERE ev.data -> 'unique' = 'true'::jsonb)
FROM tags CROSS JOIN domains
JOIN ev ON (tags.tag = '' OR ev.data -> 'tags' @> jsonb_build_array(tags.tag))
       AND (domains.domain = '' OR ev.domain = domains.domain)
GROUP BY 1, 2, 3, 4
""")


async def recounted(session: AsyncSession, account_id: str, longest: int = 200) -> Counts:
    """The account's events counted now, per tag ('' = all; tags up to ``longest`` characters), sending
    domain ('' = all), day and type."""
    rows = await session.execute(_RECOUNTED, {"account": account_id, "longest": longest})
    return {(tag, domain, day, type_): (int(n), int(u)) for tag, domain, day, type_, n, u in rows.all()}


async def rolled_up(session: AsyncSession, account_id: str) -> Counts:
    """The account's rows of event_counts (rows counting nothing left out: a deletion leaves zeros)."""
    rows = await session.execute(text(
        "SELECT tag, domain, day, type, n, unique_n FROM event_counts WHERE account_id = :account "
        "AND n <> 0"), {"account": account_id})
    return {(tag, domain, day, type_): (int(n), int(u)) for tag, domain, day, type_, n, u in rows.all()}
