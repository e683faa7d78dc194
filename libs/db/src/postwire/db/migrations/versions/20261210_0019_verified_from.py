"""Sending only From verified domains

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-10 00:00:00.000000

Hand-written (docs/domains.md, "Verified From domains"). ``domains.verified_at``: when the domain's DKIM
record was found published (``POST /v1/domains/{name}/verify``) or an operator vouched for it (``postwire
domain verify --trust``); NULL: not verified. ``accounts.allow_unverified_from``: the account may send
From any domain (ingest-smtp and the API otherwise refuse mail whose From is not a verified sending domain
of the account or a subdomain of one). Accounts that exist when this runs keep sending as before (true);
new accounts start refusing (false).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('domains', sa.Column('verified_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('accounts', sa.Column('allow_unverified_from', sa.Boolean(), nullable=False,
                                        server_default=sa.true()))
    # existing accounts were created true above; new ones start false
    op.alter_column('accounts', 'allow_unverified_from', server_default=sa.false())


def downgrade() -> None:
    op.drop_column('accounts', 'allow_unverified_from')
    op.drop_column('domains', 'verified_at')
