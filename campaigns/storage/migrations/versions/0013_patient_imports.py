"""patient imports: uploaded CSV files and their reports; patients found by clinic reference

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 06:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from campaigns.storage.types import UTCDateTime


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'patient_imports',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('file_name', sa.String(length=200), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=True),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('checked', sa.Integer(), nullable=False),
        sa.Column('ready', sa.Integer(), nullable=False),
        sa.Column('already', sa.Integer(), nullable=False),
        sa.Column('bad', sa.Integer(), nullable=False),
        sa.Column('written', sa.Integer(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=True),
        sa.Column('error', sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_patient_imports')),
    )
    # The patients table is small beside the outbox; a plain build takes a moment.
    op.create_index('ix_patients_clinic_ref', 'patients', ['clinic_ref'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_patients_clinic_ref', table_name='patients')
    op.drop_table('patient_imports')
