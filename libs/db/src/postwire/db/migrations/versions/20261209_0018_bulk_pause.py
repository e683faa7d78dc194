"""Automatic pause of an account's bulk stream on complaints

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-09 20:00:00.000000

Hand-written. Two columns on ``accounts`` (docs/delivery.md, "Pausing bulk mail on complaints"):
``pause_bulk_at_complaint_rate``, the 24-hour complaint rate (0.003 = 0.3 %) at which the account's bulk
lane is paused automatically, NULL = never (default 0.003, also for existing accounts); and
``bulk_paused_at``, set when it was paused, NULL while bulk mail flows. Resuming is a human decision
(``POST /v1/account/bulk/resume``, ``postwire account resume-bulk``) that clears it.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('accounts', sa.Column('pause_bulk_at_complaint_rate', sa.Numeric(precision=6, scale=5),
                                        nullable=True, server_default=sa.text('0.003')))
    op.add_column('accounts', sa.Column('bulk_paused_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('accounts', 'bulk_paused_at')
    op.drop_column('accounts', 'pause_bulk_at_complaint_rate')
