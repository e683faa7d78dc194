"""Stored templates and their versions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 15:30:00.000000

Hand-written.

``templates`` has integer ids (SMTPeter's API hands them out as numbers); a name is unique per account
among the templates not deleted. ``template_versions`` keeps every saved content: a message remembers the
version it was built from, and a deleted template's versions stay for messages still being resent.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'templates',
        sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column('account_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_templates_account_id_accounts'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_templates')),
    )
    op.create_index('ix_templates_account_name', 'templates', ['account_id', 'name'], unique=True,
                    postgresql_where=sa.text('deleted_at IS NULL'))
    op.create_index('ix_templates_account_id', 'templates', ['account_id', 'id'], unique=False)
    op.create_table(
        'template_versions',
        sa.Column('template_id', sa.BigInteger(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('content', JSONType, nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.ForeignKeyConstraint(['template_id'], ['templates.id'],
                                name=op.f('fk_template_versions_template_id_templates'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('template_id', 'version', name=op.f('pk_template_versions')),
    )


def downgrade() -> None:
    op.drop_table('template_versions')
    op.drop_index('ix_templates_account_id', table_name='templates')
    op.drop_index('ix_templates_account_name', table_name='templates')
    op.drop_table('templates')
