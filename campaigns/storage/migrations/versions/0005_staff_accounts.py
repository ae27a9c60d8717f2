"""staff accounts, sessions and second factors

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 01:28:24.194226

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

import campaigns.storage.types


# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('sign_in_throttle',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_ends_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_sign_in_throttle'))
    )
    op.create_table('staff_users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('display_name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('totp_secret_sealed', sa.Text(), nullable=True),
    sa.Column('totp_last_step', sa.BigInteger(), nullable=True),
    sa.Column('created_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('disabled_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_login_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('password_changed_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_users'))
    )
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.create_index('uq_staff_users_email', ['email'], unique=True)

    op.create_table('staff_passkeys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('credential_id', sa.String(length=1400), nullable=False),
    sa.Column('public_key', sa.Text(), nullable=False),
    sa.Column('sign_count', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['staff_users.id'], name=op.f('fk_staff_passkeys_user_id_staff_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_passkeys'))
    )
    with op.batch_alter_table('staff_passkeys', schema=None) as batch_op:
        batch_op.create_index('ix_staff_passkeys_user_id', ['user_id'], unique=False)
        batch_op.create_index('uq_staff_passkeys_credential_id', ['credential_id'], unique=True)

    op.create_table('staff_recovery_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('used_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['staff_users.id'], name=op.f('fk_staff_recovery_codes_user_id_staff_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_recovery_codes')),
    sa.UniqueConstraint('user_id', 'code_hash', name=op.f('uq_staff_recovery_codes_user_id_code_hash'))
    )
    op.create_table('staff_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stage', sa.String(length=24), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', campaigns.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('challenge', sa.String(length=128), nullable=True),
    sa.Column('pending_totp_sealed', sa.Text(), nullable=True),
    sa.Column('flash', campaigns.storage.types.JsonText(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['staff_users.id'], name=op.f('fk_staff_sessions_user_id_staff_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_sessions'))
    )
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_staff_sessions_user_id', ['user_id'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('staff_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_staff_sessions_user_id')

    op.drop_table('staff_sessions')
    op.drop_table('staff_recovery_codes')
    with op.batch_alter_table('staff_passkeys', schema=None) as batch_op:
        batch_op.drop_index('uq_staff_passkeys_credential_id')
        batch_op.drop_index('ix_staff_passkeys_user_id')

    op.drop_table('staff_passkeys')
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_index('uq_staff_users_email')

    op.drop_table('staff_users')
    op.drop_table('sign_in_throttle')
