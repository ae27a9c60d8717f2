"""outcome index: sends by the time the provider accepted them (the ops page's error rates)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 05:10:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_SENT = sa.text("sent_at IS NOT NULL")


def upgrade() -> None:
    """Upgrade schema."""
    indexes: list[dict[str, Any]] = [
        dict(
            index_name='ix_scheduled_messages_sent_at', table_name='scheduled_messages',
            columns=['sent_at'], unique=False, postgresql_where=_SENT, sqlite_where=_SENT,
        ),
    ]
    if op.get_bind().dialect.name == 'postgresql':
        # The outbox may hold millions of rows: built without blocking sends.
        with op.get_context().autocommit_block():
            for index in indexes:
                op.create_index(**index, postgresql_concurrently=True, if_not_exists=True)
    else:
        for index in indexes:
            op.create_index(**index)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_scheduled_messages_sent_at', table_name='scheduled_messages')
