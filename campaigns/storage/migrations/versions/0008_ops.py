"""operations: heartbeats of beat, jobs and worker queues; periodic job runs (two beats)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'heartbeats',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('host', sa.String(length=128), nullable=False),
        sa.Column('seen_at', UTCDateTime(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'name', 'host', name=op.f('pk_heartbeats')),
    )
    op.create_table(
        'periodic_runs',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('started_at', UTCDateTime(), nullable=False),
        sa.Column('runner', sa.String(length=128), nullable=False),
        sa.Column('finished_at', UTCDateTime(), nullable=True),
        sa.Column('succeeded_at', UTCDateTime(), nullable=True),
        sa.Column('failed_at', UTCDateTime(), nullable=True),
        sa.Column('error', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_periodic_runs')),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('periodic_runs')
    op.drop_table('heartbeats')
