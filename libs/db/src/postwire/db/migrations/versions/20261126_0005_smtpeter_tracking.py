"""SMTP login switches and per-domain tracking host

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 15:40:00.000000

Hand-written.

smtp_credentials gains the login's default switches (inline CSS, click/open/bounce tracking, preventscam)
that x-smtpeter-* / X-Postwire-* headers override per message; domains gains the host name of its
tracking links. Existing logins keep today's behaviour: CSS inlined, bounces tracked, nothing else.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SWITCHES = (("inline_css", True), ("track_clicks", False), ("track_opens", False),
             ("track_bounces", True), ("prevent_scam", False))


def upgrade() -> None:
    for name, default in _SWITCHES:
        op.add_column("smtp_credentials", sa.Column(name, sa.Boolean(), nullable=False,
                                                    server_default=sa.true() if default else sa.false()))
    op.add_column("domains", sa.Column("tracking_host", sa.String(253), nullable=True))


def downgrade() -> None:
    op.drop_column("domains", "tracking_host")
    for name, _ in reversed(_SWITCHES):
        op.drop_column("smtp_credentials", name)
