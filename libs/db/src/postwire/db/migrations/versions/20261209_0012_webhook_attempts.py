"""Webhook attempts: the recent deliveries of each endpoint

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09 12:00:00.000000

Hand-written. One row per POST the notifier made (docs/webhooks.md, "Recent deliveries"): the outcome,
the endpoint's HTTP status or the error, the time it took. Read newest first per endpoint
(``ix_webhook_attempts_webhook_id``), pruned by age (``ix_webhook_attempts_at``).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'webhook_attempts',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('webhook_id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('event_id', sa.String(length=450), nullable=False),
        sa.Column('event_type', sa.String(length=24), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('http_status', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=False),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'],
                                name=op.f('fk_webhook_attempts_webhook_id_webhooks'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
    )
    op.create_index('ix_webhook_attempts_webhook_id', 'webhook_attempts', ['webhook_id', 'id'], unique=False)
    op.create_index('ix_webhook_attempts_at', 'webhook_attempts', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_attempts_at', table_name='webhook_attempts')
    op.drop_index('ix_webhook_attempts_webhook_id', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
