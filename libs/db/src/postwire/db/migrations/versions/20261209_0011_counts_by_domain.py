"""Event counts per sending domain

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09 09:00:00.000000

Hand-written. The console's overview and /v1/stats filter by sending domain as well as by tag
(docs/console.md, "Speed"), so ``event_counts`` gains a ``domain`` dimension: each event is counted under
every combination of tag ('' and each tag of its message, as 0010) and domain ('' and its sending domain),
and a tag filter, a domain filter or both read a few rows per day, whatever the volume.

The sending domain of an event is that of its message: the lower-cased part of ``messages.mail_from``
after the last '@', 1 to 253 characters (none for the null sender, an address without one, or an event
whose message is not recorded). The query side builds the same expression
(postwire.db.events_query.sending_domain; libs/db/tests/test_event_counts.py runs both on the same
senders). The event triggers find it by joining their transition table with ``messages`` on its primary
key, so the recorder inserts a batch's messages before its events.

An event stored before its message (another recorder's batch, a hand-written fix) is counted under ''
then, and under its domain when the message is inserted: statement triggers on ``messages`` count the
stored events of the messages inserted, deleted or changed. Two transactions that insert a message and
one of its events at the same time would each miss the other's uncommitted row, so both sides take a
transaction lock on the message id first (an event trigger only for the events whose message it does not
see): the second one waits for the first to commit and then sees its row. Locks take shared memory
(``max_locks_per_transaction``), so a statement with more than LOCKS_MAX such ids (a bulk import, not a
recorder's batch) locks the other table against writes until it commits instead.

The counts are rebuilt from the events, with ``events`` and ``messages`` locked against writes
meanwhile (seconds per million events; the recorder's batches are held, not lost): events, then
messages, the order in which the recorders of 0010 write them, so a batch in flight finishes first
rather than deadlock with this migration. The downgrade locks in the new recorders' order.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the sending domain of the message ``m`` (NULL for none): what events_query.sending_domain builds.
# split_part, not a regular expression: this runs for every event written, and '@([^@]{1,253})$' took
# ten times as long as the rest of the trigger
DOMAIN = ("CASE WHEN strpos(m.mail_from, '@') > 0 AND length(split_part(m.mail_from, '@', -1)) "
          "BETWEEN 1 AND 253 THEN lower(split_part(m.mail_from, '@', -1)) END")

# the first key of the transaction locks on message ids (the second is the id's hash)
LOCK_SPACE = 20261209
# the most message ids one statement locks one by one; beyond, it locks the other table
LOCKS_MAX = 1000

# events ``e`` (with their messages ``m``, from ``source``) summed per count: each event under every tag
# of 0010 ('' and each distinct string tag of up to 200 characters) and every domain in ``domains``
# (NULL ones left out); ``unique`` as totals() reads it, a JSON true
COUNTS = """
SELECT e.account_id, t.tag, d.domain, (e.at AT TIME ZONE 'UTC')::date, e.type, count(*),
       count(*) FILTER (WHERE e.data -> 'unique' = 'true'::jsonb)
FROM {source}
CROSS JOIN LATERAL (
    SELECT ''
    UNION
    SELECT tag #>> '{{}}'
    FROM jsonb_array_elements(CASE jsonb_typeof(e.data -> 'tags') WHEN 'array' THEN e.data -> 'tags'
                                                                    ELSE '[]'::jsonb END) AS tag
    WHERE jsonb_typeof(tag) = 'string' AND length(tag #>> '{{}}') BETWEEN 1 AND 200
) AS t(tag)
CROSS JOIN LATERAL (VALUES {domains}) AS d(domain)
WHERE d.domain IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
ORDER BY 1, 2, 3, 4, 5
"""
# events as they are written, with their message when it is there: under '' and the sending domain
EVENTS_WITH_MESSAGES = ("{rows} AS e LEFT JOIN messages AS m ON m.id = e.message_id "
                        "AND m.account_id = e.account_id")
EVERY_DOMAIN = f"(''), ({DOMAIN})"
# messages as they are written, with their stored events: under the sending domain only (the events
# were counted under '' when they were written)
MESSAGES_WITH_EVENTS = "{rows} AS m JOIN events AS e ON e.message_id = m.id AND e.account_id = m.account_id"
OWN_DOMAIN = f"({DOMAIN})"


def _add(counts: str, sign: str = "") -> str:
    """Upsert ``counts`` into event_counts (subtract them with ``sign`` '-'), in key order."""
    return f"""
        INSERT INTO event_counts AS c (account_id, tag, domain, day, type, n, unique_n)
        SELECT account_id, tag, domain, day, type, {sign}n, {sign}unique_n FROM ({counts}) AS counted
            (account_id, tag, domain, day, type, n, unique_n)
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (account_id, tag, domain, day, type)
        DO UPDATE SET n = c.n + excluded.n, unique_n = c.unique_n + excluded.unique_n;"""


def _lock(ids: str, other: str) -> str:
    """Take the transaction locks on the message ids ``ids`` selects, in one order for every writer; for
    more than LOCKS_MAX of them, lock the table ``other`` against writes instead (waiting for the
    transactions writing it to finish, and making the next ones wait for this one)."""
    return f"""
        SELECT count(DISTINCT id) INTO locking FROM ({ids}) AS ids(id);
        IF locking > {LOCKS_MAX} THEN
            LOCK TABLE {other} IN SHARE ROW EXCLUSIVE MODE;
        ELSIF locking > 0 THEN
            PERFORM pg_advisory_xact_lock({LOCK_SPACE}, h)
            FROM (SELECT DISTINCT hashtext(id) AS h FROM ({ids}) AS ids(id) ORDER BY 1) AS locks;
        END IF;"""


def _events_side(rows: str, sign: str = "") -> str:
    missing = (f"SELECT e.message_id FROM {rows} AS e WHERE NOT EXISTS "
               "(SELECT FROM messages AS m WHERE m.id = e.message_id AND m.account_id = e.account_id)")
    counts = COUNTS.format(source=EVENTS_WITH_MESSAGES.format(rows=rows), domains=EVERY_DOMAIN)
    return _lock(missing, "messages") + _add(counts, sign)


def _messages_side(rows: str, sign: str = "") -> str:
    counts = COUNTS.format(source=MESSAGES_WITH_EVENTS.format(rows=rows), domains=OWN_DOMAIN)
    return _lock(f"SELECT id FROM {rows}", "events") + _add(counts, sign)


APPLY_FUNCTION = f"""
CREATE OR REPLACE FUNCTION event_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    locking bigint;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {_events_side("new_events")}
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        {_events_side("old_events", "-")}
    END IF;
    RETURN NULL;
END
$$
"""

APPLY_MESSAGES_FUNCTION = f"""
CREATE FUNCTION event_counts_apply_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    locking bigint;
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        {_messages_side("old_messages", "-")}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {_messages_side("new_messages")}
    END IF;
    RETURN NULL;
END
$$
"""

MESSAGE_TRIGGERS = (
    "CREATE TRIGGER messages_counted_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS new_messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply_messages()",
    "CREATE TRIGGER messages_counted_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS old_messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply_messages()",
    "CREATE TRIGGER messages_counted_update AFTER UPDATE ON messages "
    "REFERENCING OLD TABLE AS old_messages NEW TABLE AS new_messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_apply_messages()",
    # without messages no event has a sending domain
    "CREATE FUNCTION event_counts_truncate_messages() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN DELETE FROM event_counts WHERE domain <> ''; RETURN NULL; END $$",
    "CREATE TRIGGER messages_counted_truncate AFTER TRUNCATE ON messages "
    "FOR EACH STATEMENT EXECUTE FUNCTION event_counts_truncate_messages()",
)

# event_counts_apply as 0010 created it, for the downgrade
COUNTS_0010 = """
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

APPLY_FUNCTION_0010 = f"""
CREATE OR REPLACE FUNCTION event_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO event_counts AS c (account_id, tag, day, type, n, unique_n)
        {COUNTS_0010.format(rows="new_events")}
        ON CONFLICT (account_id, tag, day, type)
        DO UPDATE SET n = c.n + excluded.n, unique_n = c.unique_n + excluded.unique_n;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO event_counts AS c (account_id, tag, day, type, n, unique_n)
        SELECT account_id, tag, day, type, -n, -unique_n FROM ({COUNTS_0010.format(rows="old_events")}) AS gone
            (account_id, tag, day, type, n, unique_n)
        ORDER BY 1, 2, 3, 4
        ON CONFLICT (account_id, tag, day, type)
        DO UPDATE SET n = c.n + excluded.n, unique_n = c.unique_n + excluded.unique_n;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute("LOCK TABLE events, messages IN SHARE ROW EXCLUSIVE MODE")
    op.execute("ALTER TABLE event_counts ADD COLUMN domain text NOT NULL DEFAULT ''")
    op.drop_constraint('pk_event_counts', 'event_counts', type_='primary')
    op.create_primary_key('pk_event_counts', 'event_counts', ['account_id', 'tag', 'domain', 'day', 'type'])
    op.execute(APPLY_FUNCTION)
    op.execute(APPLY_MESSAGES_FUNCTION)
    for statement in MESSAGE_TRIGGERS:
        op.execute(statement)
    op.execute("TRUNCATE event_counts")
    op.execute("INSERT INTO event_counts (account_id, tag, domain, day, type, n, unique_n) "
               + COUNTS.format(source=EVENTS_WITH_MESSAGES.format(rows="events"), domains=EVERY_DOMAIN))
    op.execute("ANALYZE event_counts")


def downgrade() -> None:
    op.execute("LOCK TABLE messages, events IN SHARE ROW EXCLUSIVE MODE")
    for trigger in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER messages_counted_{trigger} ON messages")
    op.execute("DROP FUNCTION event_counts_truncate_messages()")
    op.execute("DROP FUNCTION event_counts_apply_messages()")
    op.execute(APPLY_FUNCTION_0010)
    op.execute("DELETE FROM event_counts WHERE domain <> ''")
    op.drop_constraint('pk_event_counts', 'event_counts', type_='primary')
    op.drop_column('event_counts', 'domain')
    op.create_primary_key('pk_event_counts', 'event_counts', ['account_id', 'tag', 'day', 'type'])
    op.execute("ANALYZE event_counts")
