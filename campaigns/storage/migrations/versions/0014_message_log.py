"""message log: indexes for its filters (each status by id; due date) and for a message's
audit rows

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 06:00:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEXES: list[dict[str, Any]] = [
    dict(
        index_name='ix_scheduled_messages_status_id',
        table_name='scheduled_messages',
        columns=['status', 'id'],
        unique=False,
    ),
    dict(
        index_name='ix_scheduled_messages_due_at',
        table_name='scheduled_messages',
        columns=['due_at'],
        unique=False,
    ),
    dict(
        index_name='ix_audit_events_message_id',
        table_name='audit_events',
        columns=['message_id'],
        unique=False,
        postgresql_where=sa.text('message_id IS NOT NULL'),
        sqlite_where=sa.text('message_id IS NOT NULL'),
    ),
]


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name == 'postgresql':
        # Built without blocking sends, receipts and audit writes on large tables.
        with op.get_context().autocommit_block():
            for index in INDEXES:
                op.create_index(**index, postgresql_concurrently=True, if_not_exists=True)
    else:
        for index in INDEXES:
            op.create_index(**index)


def downgrade() -> None:
    """Downgrade schema."""
    for index in reversed(INDEXES):
        op.drop_index(index['index_name'], table_name=index['table_name'])
