"""DMARC aggregate reports and their records

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-09 14:00:00.000000

Hand-written. The reports that mailbox providers send about an account's sending domains, posted to
``POST /v1/dmarc/reports`` or mailed to ``dmarc@<bounce domain>`` (docs/dmarc.md), read by
``postwire.dmarc`` and kept here so the API can list them and sum them up.

- ``dmarc_reports``: one row per report and account. The reporter's ``(org_name, report_id)`` names a
  report, so the unique index on ``(account_id, org_name, report_id)`` stores a report that arrives twice
  (a retried POST, a mail re-sent, the same report by mail and by API) once. ``policy`` is the published
  policy as JSONB (its keys vary: ``np`` only in some reports). ``ix_dmarc_reports_account_domain_end``
  serves the listing (newest first by end date) and the summary (reports whose dates overlap a window).
- ``dmarc_records``: the report's rows, keyed by (report, position in the report), so a listing shows
  them in the reporter's order. The summary is a ``GROUP BY source_ip`` over these rows, in SQL; the
  authentication results are JSONB lists, shown as they are and never filtered on.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'dmarc_reports',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('domain', sa.String(length=253), nullable=False),
        sa.Column('org_name', sa.String(length=255), nullable=False),
        sa.Column('org_email', sa.String(length=320), nullable=False),
        sa.Column('report_id', sa.String(length=255), nullable=False),
        sa.Column('begin', sa.DateTime(timezone=True), nullable=False),
        sa.Column('end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('policy', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_dmarc_reports_account_id_accounts'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dmarc_reports')),
    )
    op.create_index('ix_dmarc_reports_account_org_report', 'dmarc_reports',
                    ['account_id', 'org_name', 'report_id'], unique=True)
    op.create_index('ix_dmarc_reports_account_domain_end', 'dmarc_reports',
                    ['account_id', 'domain', 'end', 'id'], unique=False)
    op.create_table(
        'dmarc_records',
        sa.Column('report_id', sa.BigInteger(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('source_ip', sa.String(length=45), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('disposition', sa.String(length=32), nullable=False),
        sa.Column('dkim', sa.String(length=32), nullable=False),
        sa.Column('spf', sa.String(length=32), nullable=False),
        sa.Column('header_from', sa.String(length=255), nullable=False),
        sa.Column('dkim_results', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('spf_results', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(['report_id'], ['dmarc_reports.id'],
                                name=op.f('fk_dmarc_records_report_id_dmarc_reports'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('report_id', 'position', name=op.f('pk_dmarc_records')),
    )


def downgrade() -> None:
    op.drop_table('dmarc_records')
    op.drop_index('ix_dmarc_reports_account_domain_end', table_name='dmarc_reports')
    op.drop_index('ix_dmarc_reports_account_org_report', table_name='dmarc_reports')
    op.drop_table('dmarc_reports')
