"""data protection: patients' erasure mark; provider events found by message (retention)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 10:00:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('patients') as batch:
        batch.add_column(sa.Column('erased_at', UTCDateTime(timezone=True), nullable=True))
    index: dict[str, Any] = dict(
        index_name='ix_provider_events_message_id',
        table_name='provider_events',
        columns=['message_id'],
        unique=False,
        postgresql_where=sa.text('message_id IS NOT NULL'),
        sqlite_where=sa.text('message_id IS NOT NULL'),
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Built without blocking the webhooks' inserts into a large table.
        with op.get_context().autocommit_block():
            op.create_index(**index, postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index(**index)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_provider_events_message_id', table_name='provider_events')
    with op.batch_alter_table('patients') as batch:
        batch.drop_column('erased_at')
