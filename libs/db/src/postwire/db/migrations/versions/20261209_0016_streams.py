"""Default streams (lanes) of SMTP logins and API keys

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09 18:00:00.000000

Hand-written. ``default_stream`` on ``smtp_credentials`` and ``api_keys``: the lane (``transactional`` or
``bulk``, postwire.core.lanes, docs/delivery.md) of the messages a login or key submits when the message
does not name one; NULL decides by the message (several recipients or List-Unsubscribe: bulk). The
values are checked where they are set (postwire.db.accounts).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("smtp_credentials", "api_keys")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column('default_stream', sa.String(length=16), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, 'default_stream')
