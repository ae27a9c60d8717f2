"""send fencing (call started, batch leases) and reconciliation of unknown sends

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import campaigns.storage.types


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('send_leases',
    sa.Column('token', sa.String(length=36), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=False),
    sa.Column('started_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('renewed_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('token', name=op.f('pk_send_leases'))
    )
    with op.batch_alter_table('scheduled_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('call_started_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reconcile_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_scheduled_messages_reconcile', ['reconcile_at'], unique=False, postgresql_where=sa.text("status = 'unknown' AND reconcile_at IS NOT NULL"), sqlite_where=sa.text("status = 'unknown' AND reconcile_at IS NOT NULL"))
    # Unknown sends left by the old reaper: ask their providers once this version runs.
    op.execute("UPDATE scheduled_messages SET reconcile_at = updated_at WHERE status = 'unknown'")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('scheduled_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_scheduled_messages_reconcile', postgresql_where=sa.text("status = 'unknown' AND reconcile_at IS NOT NULL"), sqlite_where=sa.text("status = 'unknown' AND reconcile_at IS NOT NULL"))
        batch_op.drop_column('reconcile_at')
        batch_op.drop_column('call_started_at')
    op.drop_table('send_leases')
