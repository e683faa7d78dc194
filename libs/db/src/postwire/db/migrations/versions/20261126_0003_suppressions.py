"""suppressions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 14:00:00.000000

Hand-written. The suppression list (postwire.db.suppressions, docs/suppressions.md) and the index the
soft-bounce policy counts with (events of one account and recipient, by time).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'suppressions',
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('reason', sa.String(length=64), nullable=False),
        sa.Column('source', sa.String(length=24), nullable=False),
        sa.Column('source_event_id', sa.String(length=450), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('account_id', 'address', name=op.f('pk_suppressions')),
    )
    # keyset pagination: (account_id, created_at, address) is the listing order
    op.create_index('ix_suppressions_account_created', 'suppressions',
                    ['account_id', 'created_at', 'address'], unique=False)
    # the soft-bounce policy counts one recipient's recent failures of one account
    op.create_index('ix_events_account_recipient_at', 'events', ['account_id', 'recipient', 'at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_events_account_recipient_at', table_name='events')
    op.drop_index('ix_suppressions_account_created', table_name='suppressions')
    op.drop_table('suppressions')
