"""Data subject requests: exports and erasures, and their audit records

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09 16:00:00.000000

Hand-written. ``data_requests`` (postwire.db.data_requests, docs/data-requests.md): one row per export or
erasure of one address's data, naming the address only by its pseudonym (``subject``), with who asked
and what was exported or erased (``counts``). ``address`` is set only for an export requested with
SMTPeter's two-step call, which must be able to answer ``GET /v1/datarequest/{id}`` later; an erasure of
the address clears it, found through ``ix_data_requests_account_address_lower``.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'data_requests',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('subject', sa.String(length=64), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=True),
        sa.Column('requested_by', sa.String(length=64), nullable=False),
        sa.Column('counts', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_data_requests_account_id_accounts'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_data_requests')),
    )
    op.create_index('ix_data_requests_account_created', 'data_requests', ['account_id', 'created_at', 'id'],
                    unique=False)
    op.execute("CREATE INDEX ix_data_requests_account_address_lower ON data_requests "
               "(account_id, lower(address)) WHERE address IS NOT NULL")


def downgrade() -> None:
    op.drop_index('ix_data_requests_account_address_lower', table_name='data_requests')
    op.drop_index('ix_data_requests_account_created', table_name='data_requests')
    op.drop_table('data_requests')
