"""loss hold: an enrollment held for a loss reported in a text, until staff confirm or clear it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_OLD = "status IN ('active', 'paused')"
_NEW = "status IN ('active', 'paused', 'loss_hold')"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_from', sa.String(length=16), nullable=True))
        # A held enrollment is still the patient's live one for its campaign.
        batch_op.drop_index('uq_enrollments_live', postgresql_where=sa.text(_OLD), sqlite_where=sa.text(_OLD))
        batch_op.create_index('uq_enrollments_live', ['patient_id', 'campaign'], unique=True, postgresql_where=sa.text(_NEW), sqlite_where=sa.text(_NEW))


def downgrade() -> None:
    """Downgrade schema: held enrollments go back to what they were (their sends were
    cancelled by the hold and are planned again when staff resume them)."""
    op.execute("UPDATE enrollments SET status = COALESCE(held_from, 'paused') WHERE status = 'loss_hold'")
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('uq_enrollments_live', postgresql_where=sa.text(_NEW), sqlite_where=sa.text(_NEW))
        batch_op.create_index('uq_enrollments_live', ['patient_id', 'campaign'], unique=True, postgresql_where=sa.text(_OLD), sqlite_where=sa.text(_OLD))
        batch_op.drop_column('held_from')
