"""patients edited by staff: consent wording as recorded; the patient list's status index

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 05:30:00.000000

"""
from typing import Any, Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('consent_events') as batch:
        batch.add_column(sa.Column('wording', sa.Text(), nullable=True))
    index: dict[str, Any] = dict(
        index_name='ix_enrollments_status_id',
        table_name='enrollments',
        columns=['status', 'id'],
        unique=False,
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Built without blocking enrolments and changes on a large table.
        with op.get_context().autocommit_block():
            op.create_index(**index, postgresql_concurrently=True, if_not_exists=True)
    else:
        op.create_index(**index)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_enrollments_status_id', table_name='enrollments')
    with op.batch_alter_table('consent_events') as batch:
        batch.drop_column('wording')
