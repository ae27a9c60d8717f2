"""Periodic jobs run at most once a period, however many beats claim them and however long
a run takes (campaigns.periodic)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, text

from campaigns import heartbeats, periodic
from campaigns.rules.clock import SystemClock
from campaigns.storage.db import Database
from campaigns.storage.models import PeriodicRun


def test_a_period_is_claimed_once_then_again_after_ninety_percent(sqlite_url: str) -> None:
    """On SQLite (one embedded process) by the caller's clock; PostgreSQL below."""
    database = Database.from_url(sqlite_url)
    now = SystemClock().now()
    try:
        assert periodic.claim(database, "job", 60, now, "a")
        assert not periodic.claim(database, "job", 60, now + timedelta(seconds=53), "b")
        assert periodic.claim(database, "job", 60, now + timedelta(seconds=54), "b")
        with database.session() as session:
            row = session.get(PeriodicRun, "job")
            assert row is not None and row.runner == "b"
    finally:
        database.dispose()


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_give_the_period_to_exactly_one(
    clean_postgres_url: str,
) -> None:
    database = Database.from_url(clean_postgres_url, pool_size=20)
    try:
        for attempt in range(2):  # the first claim (insert) and a later one (update)
            if attempt:
                with database.session() as session:
                    session.execute(
                        text("UPDATE periodic_runs SET started_at = started_at - interval '1 h'")
                    )
            start = threading.Barrier(16)
            won: list[str] = []

            threads = [
                threading.Thread(target=_claim, args=(database, start, won, f"beat-{i}"))
                for i in range(16)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert len(won) == 1, won
            # Within the period, nobody else gets it, whatever their own clock says.
            later = _now(database) + timedelta(hours=5)
            assert not periodic.claim(database, "job", 60, later, "late")
    finally:
        database.dispose()


@pytest.mark.postgres
def test_a_run_still_going_makes_the_next_one_skip_until_its_connection_ends(
    clean_postgres_url: str,
) -> None:
    clock = SystemClock()
    database = Database.from_url(clean_postgres_url, pool_size=2)
    inside, release = threading.Event(), threading.Event()
    results: list[periodic.Ran] = []

    def slow() -> None:
        inside.set()
        assert release.wait(30)

    first = threading.Thread(
        target=lambda: results.append(periodic.run(database, clock, "horizon", slow, "one"))
    )
    first.start()
    try:
        assert inside.wait(30)
        skipped = periodic.run(database, clock, "horizon", lambda: 1, "two")
        assert skipped.result == "skipped"
    finally:
        release.set()
        first.join(30)
    assert [r.result for r in results] == ["ok"]
    assert periodic.run(database, clock, "horizon", lambda: 2, "two").value == 2
    # A run that raises is recorded as failed, with the error's kind, and re-raised.
    with pytest.raises(ZeroDivisionError):
        periodic.run(database, clock, "horizon", lambda: 1 / 0, "two")
    with database.session() as session:
        row = session.get(PeriodicRun, "horizon")
        seen = heartbeats.newest(session)
    assert row is not None and row.error == "ZeroDivisionError" and row.failed_at is not None
    assert (heartbeats.Kind.JOB, "horizon") in seen
    database.dispose()


@pytest.mark.postgres
def test_a_killed_runner_frees_the_job(clean_postgres_url: str) -> None:
    """The lock is the session's: when its backend dies (a worker killed), the job is free."""
    holder = Database.from_url(clean_postgres_url, pool_size=1)
    other = Database.from_url(clean_postgres_url, pool_size=1)
    try:
        with periodic.exclusive(holder, "horizon") as alone:
            assert alone
            with periodic.exclusive(other, "horizon") as second:
                assert not second
            with other.session() as session:
                session.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks"
                        " WHERE locktype = 'advisory' AND classid = :space"
                    ),
                    {"space": periodic.LOCK_SPACE},
                )
            with periodic.exclusive(other, "horizon") as after:
                assert after
    finally:
        holder.dispose()
        other.dispose()


def _claim(database: Database, start: threading.Barrier, won: list[str], who: str) -> None:
    start.wait()
    if periodic.claim(database, "job", 60, _now(database), who):
        won.append(who)


def _now(database: Database) -> datetime:
    with database.session() as session:
        found: datetime = session.execute(select(text("now()"))).scalar_one()
        return found
