"""Shared fixtures: settings, a movable clock, and real databases (SQLite file and PostgreSQL).

PostgreSQL: one fresh database per test session (dropped at the end), emptied between tests.
Set CAMPAIGNS_TEST_POSTGRES_URL to point elsewhere (default: the local server, trust auth).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from campaigns.bootstrap import Services, build
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.rules import passwords
from campaigns.rules.clock import MovableClock
from campaigns.settings import Settings
from campaigns.storage.db import Database
from campaigns.storage.migrate import upgrade
from campaigns.storage.models import Base

POSTGRES_ADMIN_URL = os.environ.get(
    "CAMPAIGNS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CAMPAIGNS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ALWAYS_OPEN = "Mon-Sun 00:00-24:00"


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "test",
        "database_url": "sqlite://",
        "sms_provider": "fake",
        "email_provider": "fake",
        "send_concurrency": 4,
        # TestClient's requests name the host "testserver".
        "allowed_hosts": "testserver",
    }
    values.update(overrides)
    return Settings.model_validate(values)


#: Where hashing is tested at the production cost; everywhere else a cheap argon2id stands in.
PRODUCTION_HASHING = {"tests.unit.test_staff_rules"}


@pytest.fixture(autouse=True, scope="module")
def _cheap_password_hashes(request: pytest.FixtureRequest) -> Iterator[None]:
    """argon2id at its production cost takes about 0.3 s a sign-in (hash and verify), which
    made staff sign-ins most of the suite's time. Tests that sign staff in in this process use
    a cheap argon2id (the same scheme, so the same code runs; a stored hash still carries its
    parameters); subprocesses (the CLI, `serve`) keep the production cost."""
    if request.module.__name__ in PRODUCTION_HASHING:
        yield
        return
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", cheap)
        patch.setattr(passwords, "_DUMMY", cheap.hash("not anyone's password"))
        yield


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    name = f"campaigns_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, said plainly
        pytest.exit(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}", returncode=3)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _empty(database: Database) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with database.session() as session:
        if database.is_postgres:
            session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                session.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test (for PostgreSQL-only tests)."""
    yield postgres_url
    database = Database.from_url(postgres_url, pool_size=1)
    _empty(database)
    database.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'test.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each integration test runs on the embedded SQLite file and on real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    database = Database.from_url(url, pool_size=1)
    _empty(database)
    database.dispose()


@pytest.fixture
def clock() -> MovableClock:
    # A Monday morning in London, in winter (GMT), away from any bank holiday.
    return MovableClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))


@pytest.fixture
def make_services(clock: MovableClock) -> Iterator[object]:
    built: list[Services] = []

    def factory(database_url: str, **overrides: object) -> Services:
        services = build(
            make_settings(database_url=database_url, **overrides),
            clock=clock,
            sms=FakeSmsSender(),
            email=FakeEmailSender(),
        )
        built.append(services)
        return services

    yield factory
    for services in built:
        services.close()


@pytest.fixture
def services(make_services: object, database_url: str) -> Services:
    assert callable(make_services)
    made: Services = make_services(database_url)
    return made
