"""Messages remember the stored template they were built from

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000

Hand-written.

``messages.template_id`` is the template of a message built from one (the ``template_id`` of its
``accepted`` events), NULL otherwise; no foreign key, as ``messages`` has none and the recorder must be
able to store a message whatever happened to its template. The partial index serves
GET /v1/events/template/{id}: the account's messages of one template, and no entry for the many messages
written in the send itself.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('messages', sa.Column('template_id', sa.BigInteger(), nullable=True))
    op.create_index('ix_messages_account_template', 'messages', ['account_id', 'template_id'], unique=False,
                    postgresql_where=sa.text('template_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_messages_account_template', table_name='messages')
    op.drop_column('messages', 'template_id')
