"""the built-in provider is called "local" ("outbox" is the send table's name)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ("scheduled_messages", "provider_events", "channel_halts")


def upgrade() -> None:
    """Upgrade schema."""
    for table in TABLES:
        op.execute(f"UPDATE {table} SET provider = 'local' WHERE provider = 'outbox'")


def downgrade() -> None:
    """Downgrade schema."""
    for table in TABLES:
        op.execute(f"UPDATE {table} SET provider = 'outbox' WHERE provider = 'local'")
