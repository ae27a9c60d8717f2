"""campaign versions with clinical sign-off; campaigns paused or ended for everyone; each
outbox row's content version

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 09:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'campaign_versions',
        sa.Column('id', Id, nullable=False),
        sa.Column('campaign', sa.String(length=64), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('based_on', Id, nullable=True),
        sa.Column('definition', sa.Text(), nullable=False),
        sa.Column('templates', sa.Text(), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('author', sa.String(length=128), nullable=False),
        sa.Column('editors', sa.Text(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('updated_at', UTCDateTime(), nullable=False),
        sa.Column('approved_by', sa.String(length=128), nullable=True),
        sa.Column('approved_at', UTCDateTime(), nullable=True),
        sa.Column('approved_hash', sa.String(length=64), nullable=True),
        sa.Column('approval_note', sa.Text(), nullable=True),
        sa.Column('live_from', UTCDateTime(), nullable=True),
        sa.Column('live_until', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_versions')),
        sa.UniqueConstraint(
            'campaign', 'number', name=op.f('uq_campaign_versions_campaign_number')
        ),
    )
    for state in ('live', 'draft'):
        op.create_index(
            f'uq_campaign_versions_{state}',
            'campaign_versions',
            ['campaign'],
            unique=True,
            postgresql_where=sa.text(f"state = '{state}'"),
            sqlite_where=sa.text(f"state = '{state}'"),
        )
    op.create_table(
        'campaign_states',
        sa.Column('campaign', sa.String(length=64), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('changed_at', UTCDateTime(), nullable=False),
        sa.Column('changed_by', sa.String(length=128), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('campaign', name=op.f('pk_campaign_states')),
    )
    # A nullable column with no default: PostgreSQL adds it without rewriting the outbox.
    with op.batch_alter_table('scheduled_messages') as batch:
        batch.add_column(sa.Column('content_version', Id, nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('scheduled_messages') as batch:
        batch.drop_column('content_version')
    op.drop_table('campaign_states')
    for state in ('draft', 'live'):
        op.drop_index(f'uq_campaign_versions_{state}', table_name='campaign_versions')
    op.drop_table('campaign_versions')
