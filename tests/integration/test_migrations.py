"""The migrations build exactly the schema the models describe, on both databases: a model
change without its migration (or a migration without its model) fails here, not in
production."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from campaigns.storage.migrate import alembic_config
from campaigns.storage.models import Base


def _differences(url: str) -> list[Any]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": False}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrated_sqlite_matches_the_models(sqlite_url: str) -> None:
    assert _differences(sqlite_url) == []


@pytest.mark.postgres
def test_migrated_postgres_matches_the_models(postgres_url: str) -> None:
    assert _differences(postgres_url) == []


def test_the_migrations_form_one_line() -> None:
    """One head, each revision numbered after the one it follows (branches merge badly)."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(scripts.get_heads()) == 1
    for revision in scripts.walk_revisions():
        if revision.down_revision is not None:
            assert int(revision.revision) == int(str(revision.down_revision)) + 1, revision
