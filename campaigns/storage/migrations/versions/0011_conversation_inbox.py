"""conversation inbox: conversations with their handled state; staff replies

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 05:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'conversations',
        sa.Column('id', Id, nullable=False),
        sa.Column('patient_id', Id, nullable=True),
        sa.Column('sender', sa.String(length=32), nullable=True),
        sa.Column('last_inbound_id', Id, nullable=False),
        sa.Column('last_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('handled_through', Id, nullable=True),
        sa.Column('handled_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('handled_by', sa.String(length=128), nullable=True),
        sa.Column('wrong_number_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('wrong_number_by', sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations')),
    )
    op.create_index(
        'uq_conversations_patient_id', 'conversations', ['patient_id'], unique=True,
        postgresql_where=sa.text('patient_id IS NOT NULL'),
        sqlite_where=sa.text('patient_id IS NOT NULL'),
    )
    op.create_index(
        'uq_conversations_sender', 'conversations', ['sender'], unique=True,
        postgresql_where=sa.text('patient_id IS NULL'),
        sqlite_where=sa.text('patient_id IS NULL'),
    )
    op.create_index(
        'ix_conversations_last_inbound_id', 'conversations', ['last_inbound_id'], unique=False
    )
    op.create_table(
        'staff_replies',
        sa.Column('message_id', Id, nullable=False),
        sa.Column('patient_id', Id, nullable=False),
        sa.Column('author', sa.String(length=128), nullable=False),
        sa.Column('outside_window', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('message_id', name=op.f('pk_staff_replies')),
    )
    op.create_index('ix_staff_replies_patient_id', 'staff_replies', ['patient_id'], unique=False)
    # A nullable column with no default: no rewrite of the outbox on PostgreSQL.
    with op.batch_alter_table('scheduled_messages') as batch:
        batch.add_column(sa.Column('outside_window', sa.Boolean(), nullable=True))
    # Texts already received become conversations, unread: nobody could see them before.
    op.execute(
        """
        INSERT INTO conversations (patient_id, sender, last_inbound_id, last_at)
        SELECT patient_id, NULL, MAX(id), MAX(received_at)
        FROM inbound_messages WHERE patient_id IS NOT NULL GROUP BY patient_id
        """
    )
    op.execute(
        """
        INSERT INTO conversations (patient_id, sender, last_inbound_id, last_at)
        SELECT NULL, sender, MAX(id), MAX(received_at)
        FROM inbound_messages WHERE patient_id IS NULL GROUP BY sender
        """
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('scheduled_messages') as batch:
        batch.drop_column('outside_window')
    op.drop_index('ix_staff_replies_patient_id', table_name='staff_replies')
    op.drop_table('staff_replies')
    op.drop_index('ix_conversations_last_inbound_id', table_name='conversations')
    op.drop_index('uq_conversations_sender', table_name='conversations')
    op.drop_index('uq_conversations_patient_id', table_name='conversations')
    op.drop_table('conversations')
