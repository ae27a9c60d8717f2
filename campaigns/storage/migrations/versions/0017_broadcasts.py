"""broadcasts: one-off messages to a cohort, and an index on their outbox rows

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 06:00:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BROADCAST_ROWS = sa.text("step_key LIKE 'broadcast:%'")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'broadcasts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('cohort', sa.JSON(), nullable=False),
        sa.Column('sms', sa.String(length=1000), nullable=True),
        sa.Column('email_subject', sa.String(length=200), nullable=True),
        sa.Column('email_body', sa.Text(), nullable=True),
        sa.Column('send_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('requested_by', sa.String(length=128), nullable=True),
        sa.Column('requested_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('approved_by', sa.String(length=128), nullable=True),
        sa.Column('approved_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('scheduled_by', sa.String(length=128), nullable=True),
        sa.Column('scheduled_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('cancelled_by', sa.String(length=128), nullable=True),
        sa.Column('cancelled_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('recipients', sa.Integer(), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_broadcasts')),
    )
    op.create_index('ix_broadcasts_status_id', 'broadcasts', ['status', 'id'], unique=False)
    index: dict[str, Any] = dict(
        index_name='ix_scheduled_messages_broadcast',
        table_name='scheduled_messages',
        columns=['step_key', 'status'],
        unique=False,
        postgresql_where=BROADCAST_ROWS,
        sqlite_where=BROADCAST_ROWS,
    )
    if op.get_bind().dialect.name == 'postgresql':
        # The outbox is large: built without blocking sends (it holds no rows yet, being
        # partial on broadcast rows, but the build still reads the whole table).
        with op.get_context().autocommit_block():
            op.create_index(**index, postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index(**index)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_scheduled_messages_broadcast', table_name='scheduled_messages')
    op.drop_index('ix_broadcasts_status_id', table_name='broadcasts')
    op.drop_table('broadcasts')
