"""Alembic environment: the URL comes from campaigns settings (or the caller), never from an ini."""

from __future__ import annotations

from alembic import context

from campaigns.settings import get_settings
from campaigns.storage.db import make_engine
from campaigns.storage.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations() -> None:
    engine = make_engine(url, pool_size=1)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
