"""What ``event_counts`` holds for an account, and what counting its events gives, in the same shape, so a
test can compare the two (the rollup must be exactly the events counted, whatever wrote them)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

Counts = dict[tuple[str, date, str], tuple[int, int]]  # (tag, day, type) -> (events, of them unique)

# every event under '' and under each tag of its message that ``data->'tags' @> '["tag"]'`` finds, as
# /v1/stats filters; unique as a JSON true
_RECOUNTED = text("""
WITH tags AS (
    SELECT DISTINCT t #>> '{}' AS tag
    FROM events, jsonb_array_elements(CASE jsonb_typeof(data -> 'tags') WHEN 'array' THEN data -> 'tags'
                                                                        ELSE '[]'::jsonb END) AS t
    WHERE account_id = :account AND jsonb_typeof(t) = 'string' AND t #>> '{}' <> ''
          AND length(t #>> '{}') <= :longest
)
SELECT '' AS tag, date(timezone('UTC', at)), type, count(*),
       count(*) FILTER (WHERE data -> 'unique' = 'true'::jsonb)
FROM events WHERE account_id = :account GROUP BY 1, 2, 3
UNION ALL
SELECT tags.tag, date(timezone('UTC', e.at)), e.type, count(*),
       count(*) FILTER (WHERE e.data -> 'unique' = 'true'::jsonb)
FROM tags JOIN events e ON e.account_id = :account AND e.data -> 'tags' @> jsonb_build_array(tags.tag)
GROUP BY 1, 2, 3
""")


async def recounted(session: AsyncSession, account_id: str, longest: int = 200) -> Counts:
    """The account's events counted now, per tag ('' = all; tags up to ``longest`` characters), day, type."""
    rows = await session.execute(_RECOUNTED, {"account": account_id, "longest": longest})
    return {(tag, day, type_): (int(n), int(u)) for tag, day, type_, n, u in rows.all()}


async def rolled_up(session: AsyncSession, account_id: str) -> Counts:
    """The account's rows of event_counts (rows counting nothing left out: a deletion leaves zeros)."""
    rows = await session.execute(text(
        "SELECT tag, day, type, n, unique_n FROM event_counts WHERE account_id = :account AND n <> 0"),
        {"account": account_id})
    return {(tag, day, type_): (int(n), int(u)) for tag, day, type_, n, u in rows.all()}
