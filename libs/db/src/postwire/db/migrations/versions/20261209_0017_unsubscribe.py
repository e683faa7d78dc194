"""Suppression scope, for one-click unsubscribe

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09 20:00:00.000000

Hand-written. ``scope`` on ``suppressions``: what mail an entry blocks (docs/unsubscribe.md): ``all``
(bounces, complaints, manual entries: every entry before this revision), ``bulk`` (an unsubscribe: the
account's bulk mail only) or ``list:<id>`` (an unsubscribe from one list's bulk mail).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('suppressions', sa.Column('scope', sa.String(length=120), server_default='all',
                                            nullable=False))


def downgrade() -> None:
    op.drop_column('suppressions', 'scope')
