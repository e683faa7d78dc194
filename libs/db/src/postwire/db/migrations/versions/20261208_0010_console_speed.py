"""Console speed: event counts per day, indexes of the message log and the bounces

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 18:00:00.000000

Hand-written. For an account with a million events (docs/console.md, "Speed"):

- ``event_counts``: events per account, UTC day, type and tag ('' = all), kept by statement triggers on
  ``events`` from their transition tables, so only rows actually written count (an event inserted again
  with ON CONFLICT DO NOTHING is not in them) and every writer keeps it, in its own transaction. Rows
  are upserted in key order, so two writers touching the same counts wait for each other rather than
  deadlock. Backfilled here from the events already stored: the triggers are created first, and
  CREATE TRIGGER holds a lock that makes inserts wait until this migration commits, so no event is
  missed or counted twice.
- ``ix_events_account_bounces_at``: the bounce-like events only (partial), newest first.
- ``ix_messages_account_created`` (replaces ``ix_messages_account_id``), ``ix_messages_tags`` (GIN) and
  ``ix_recipients_account_address_lower``: the message log's order and its searches by tag and address.

The index builds and the backfill read the whole ``events`` table, and writes to it wait meanwhile
(seconds per million events; the recorder's batches are held, not lost).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the rows of ``rows`` summed per count: each event under '' (every event) and under each distinct string
# tag of its message up to 200 characters (models.COUNTED_TAG_MAX; a longer one is counted from the events
# when asked for); ``unique`` as totals() reads it, a JSON true
COUNTS = """
SELECT e.account_id, t.tag, (e.at AT TIME ZONE 'UTC')::date, e.type, count(*),
       count(*) FILTER (WHERE e.data -> 'unique' = 'true'::jsonb)
FROM {rows} AS e
CROSS JOIN LATERAL (
    SELECT ''
    UNION
    SELECT tag #>> '{{}}'
    FROM jsonb_array_elements(CASE jsonb_typeof(e.data -> 'tags') WHEN 'array' THEN e.data -> 'tags'
                                                                    ELSE '[]'::jsonb END) AS tag
    WHERE jsonb_typeof(tag) = 'string' AND length(tag #>> '{{}}') BETWEEN 1 AND 200
) AS t(tag)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
"""

APPLY_FUNCTION = f"""
CREATE FUNCTION event_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO event_counts AS c (account_id, tag, day, type, n, unique_n)
        {COUNTS.format(rows="new_events")}
        ON CONFLICT (account_id, tag, day, type)
        DO UPDATE SET n = c.n + excluded.n, unique_n = c.unique_n + excluded.unique_n;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO event_counts AS c (account_id, tag, day, type, n, unique_n)
        SELECT account_id, tag, day, type, -n, -unique_n FROM ({COUNTS.format(rows="old_events")}) AS gone
            (account_id, tag, day, type, n, unique_n)
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (account_id, tag, day, type)
        DO UPDATE SET n = c.n + excluded.n, unique_n = c.unique_n + excluded.unique_n;
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    "CREATE TRIGGER events_counted_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply()",
    "CREATE TRIGGER events_counted_delete AFTER DELETE ON events REFERENCING OLD TABLE AS old_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply()",
    "CREATE TRIGGER events_counted_update AFTER UPDATE ON events "
    "REFERENCING OLD TABLE AS old_events NEW TABLE AS new_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply()",
    "CREATE FUNCTION event_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN TRUNCATE event_counts; RETURN NULL; END $$",
    "CREATE TRIGGER events_counted_truncate AFTER TRUNCATE ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_truncate()",
)

BOUNCE_LIKE = ("((type)::text = 'bounced'::text) OR ((type)::text = 'complained'::text) OR "
               "(((type)::text = 'failed'::text) AND ((data -> 'reason'::text) IS NOT NULL))")


def upgrade() -> None:
    op.create_table(
        'event_counts',
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('tag', sa.Text(), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('type', sa.String(length=24), nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('unique_n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('account_id', 'tag', 'day', 'type', name=op.f('pk_event_counts')),
    )
    op.execute(APPLY_FUNCTION)
    for statement in TRIGGERS:
        op.execute(statement)
    op.execute("INSERT INTO event_counts (account_id, tag, day, type, n, unique_n) "
               + COUNTS.format(rows="events"))

    op.create_index('ix_events_account_bounces_at', 'events', ['account_id', 'at', 'seq'], unique=False,
                    postgresql_where=sa.text(BOUNCE_LIKE))
    op.create_index('ix_messages_account_created', 'messages', ['account_id', 'created_at', 'id'],
                    unique=False)
    op.drop_index('ix_messages_account_id', table_name='messages')
    op.execute("CREATE INDEX ix_messages_tags ON messages USING gin (tags jsonb_path_ops)")
    op.execute("CREATE INDEX ix_recipients_account_address_lower ON recipients (account_id, lower(address))")
    # statistics of the new table and of the indexed expression lower(address): without them the planner
    # guesses, until autovacuum next analyzes the tables, that an address has a thousand messages
    op.execute("ANALYZE event_counts, recipients")


def downgrade() -> None:
    op.execute("DROP INDEX ix_recipients_account_address_lower")
    op.execute("DROP INDEX ix_messages_tags")
    op.create_index('ix_messages_account_id', 'messages', ['account_id'], unique=False)
    op.drop_index('ix_messages_account_created', table_name='messages')
    op.drop_index('ix_events_account_bounces_at', table_name='events')
    for trigger in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER events_counted_{trigger} ON events")
    op.execute("DROP FUNCTION event_counts_truncate()")
    op.execute("DROP FUNCTION event_counts_apply()")
    op.drop_table('event_counts')
