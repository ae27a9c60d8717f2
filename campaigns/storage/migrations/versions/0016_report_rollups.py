"""report rollups: counts by day for the staff reports, and time indexes on the tables they
are folded from

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10 06:00:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INDEXES: list[dict[str, Any]] = [
    dict(index_name='ix_enrollments_enrolled_at', table_name='enrollments', columns=['enrolled_at']),
    dict(
        index_name='ix_consent_events_withdrawn_at',
        table_name='consent_events',
        columns=['occurred_at'],
        postgresql_where=sa.text('NOT granted'),
        sqlite_where=sa.text('NOT granted'),
    ),
    dict(
        index_name='ix_audit_events_booking_clicks',
        table_name='audit_events',
        columns=['occurred_at'],
        postgresql_where=sa.text("action = 'booking_link_clicked'"),
        sqlite_where=sa.text("action = 'booking_link_clicked'"),
    ),
    dict(
        index_name='ix_inbound_messages_received_at',
        table_name='inbound_messages',
        columns=['received_at'],
    ),
    dict(index_name='ix_alerts_created_at', table_name='alerts', columns=['created_at']),
]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'report_daily',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('campaign', sa.String(length=64), nullable=False),
        sa.Column('step_key', sa.String(length=64), nullable=False),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('metric', sa.String(length=48), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            'day', 'campaign', 'step_key', 'channel', 'metric', name=op.f('pk_report_daily')
        ),
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Built without blocking enrolments, replies and audit writes on large tables.
        with op.get_context().autocommit_block():
            for index in INDEXES:
                op.create_index(**index, unique=False, postgresql_concurrently=True, if_not_exists=True)
    else:
        for index in INDEXES:
            op.create_index(**index, unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    for index in reversed(INDEXES):
        op.drop_index(index['index_name'], table_name=index['table_name'])
    op.drop_table('report_daily')
