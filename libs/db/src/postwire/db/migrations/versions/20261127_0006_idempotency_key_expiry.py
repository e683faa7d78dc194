"""Idempotency keys expire: an index on their creation time

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00.000000

Hand-written.

Idempotency-Keys are honoured for POSTWIRE_IDEMPOTENCY_TTL_S (24 h by default) and then deleted by the
api-gateway in batches; the index lets that delete find the expired rows without reading the table.
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_idempotency_keys_created_at', 'idempotency_keys', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_idempotency_keys_created_at', table_name='idempotency_keys')
