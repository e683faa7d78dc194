"""Subject search through a trigram index, where PostgreSQL has pg_trgm

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09 13:00:00.000000

Hand-written. The console's message log matches the subject as a substring, case-insensitively
(``lower(subject) LIKE '%…%'``, postwire.db.messages_query). A B-tree cannot serve that; a GIN trigram
index on ``lower(subject)`` can, so a word in few subjects is found without reading the account's
messages newest first. pg_trgm is a contrib extension: the PostgreSQL images and managed services the
chart is used with ship it (and since PostgreSQL 13 a database owner may create it), the embedded
PostgreSQL of the local run and the tests does not. Where it is missing, or may not be created, the
migration changes nothing and the search scans as before (docs/console.md, "Speed"); it is checked again
by no later migration, so a database that gains pg_trgm later gets the index by running this SQL by hand.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_messages_subject_trgm"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar() is None:
        return
    try:
        with bind.begin_nested():  # lacking the privilege must not abort the whole upgrade
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError:
        return
    op.execute(f"CREATE INDEX {INDEX} ON messages USING gin (lower(subject) gin_trgm_ops)")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")  # the extension stays: something else may use it
