"""events API and webhooks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 14:30:00.000000

Hand-written.

events.txid / events.seq give every event its recording order. ``seq`` alone is not safe to page on:
sequence values are taken at INSERT time, not at commit, so a transaction that took seq 10 may commit
after another one that took seq 11 was already read. The events API therefore pages on (txid, seq) and
only returns rows of transactions older than every transaction still running (pg_snapshot_xmin), which
can no longer gain rows. See docs/events.md.

Also: the indexes of the events API filters, and the webhooks / webhook_dead_letters tables.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    # existing rows all get the migration's transaction id and a seq in table order
    op.add_column('events', sa.Column('txid', sa.BigInteger(), nullable=False,
                                      server_default=sa.text('(pg_current_xact_id()::text::bigint)')))
    op.add_column('events', sa.Column('seq', sa.BigInteger(), sa.Identity(always=False), nullable=False))
    op.create_index('ix_events_account_txid_seq', 'events', ['account_id', 'txid', 'seq'], unique=False)
    op.create_index('ix_events_account_type_txid_seq', 'events', ['account_id', 'type', 'txid', 'seq'],
                    unique=False)
    # tag filter of /v1/events and /v1/stats: data->'tags' @> '["tag"]'
    op.execute("CREATE INDEX ix_events_tags ON events USING gin ((data -> 'tags') jsonb_path_ops)")
    # recipient filter, case-insensitive
    op.execute("CREATE INDEX ix_events_account_recipient_lower ON events (account_id, lower(recipient))")

    op.create_table(
        'webhooks',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('event_types', JSONType, nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_webhooks_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks')),
    )
    op.create_index(op.f('ix_webhooks_account_id'), 'webhooks', ['account_id'], unique=False)
    op.create_table(
        'webhook_dead_letters',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('webhook_id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('event_id', sa.String(length=450), nullable=False),
        sa.Column('payload', JSONType, nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('parked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'],
                                name=op.f('fk_webhook_dead_letters_webhook_id_webhooks'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_dead_letters')),
    )
    op.create_index('ix_webhook_dead_letters_webhook_parked', 'webhook_dead_letters',
                    ['webhook_id', 'parked_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_dead_letters_webhook_parked', table_name='webhook_dead_letters')
    op.drop_table('webhook_dead_letters')
    op.drop_index(op.f('ix_webhooks_account_id'), table_name='webhooks')
    op.drop_table('webhooks')
    op.execute("DROP INDEX ix_events_account_recipient_lower")
    op.execute("DROP INDEX ix_events_tags")
    op.drop_index('ix_events_account_type_txid_seq', table_name='events')
    op.drop_index('ix_events_account_txid_seq', table_name='events')
    op.drop_column('events', 'seq')
    op.drop_column('events', 'txid')
