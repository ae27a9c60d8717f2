"""Retention: finished outbox rows past the records policy are deleted in batches, with their
provider events; rows that can still change are kept however old (campaigns.retention)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import func, select, text

from campaigns import retention, upkeep
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import FINISHED, MessageStatus
from campaigns.storage.db import Database
from campaigns.storage.models import AuditEvent, ProviderEvent, ScheduledMessage
from tests.conftest import make_settings

DAYS = 730
_keys = count(1)


def add_message(db: Database, status: MessageStatus, changed: datetime, *, events: int = 1) -> int:
    """One outbox row in `status`, last changed at `changed`, with `events` provider events."""
    key = next(_keys)
    with db.session() as session:
        row = ScheduledMessage(
            enrollment_id=1,
            step_key=f"step-{key}",
            channel="sms",
            kind="education",
            schedule_version=1,
            status=status,
            due_at=changed,
            next_attempt_at=changed,
            attempts=1,
            updated_at=changed,
            body="Week 12: your scan",
        )
        session.add(row)
        session.flush()
        for n in range(events):
            session.add(
                ProviderEvent(
                    provider="twilio",
                    event_key=f"SM{key}-{n}",
                    message_id=row.id,
                    kind="delivered",
                    received_at=changed,
                )
            )
        return row.id


def message_ids(db: Database) -> set[int]:
    with db.session() as session:
        return set(session.execute(select(ScheduledMessage.id)).scalars())


def event_message_ids(db: Database) -> set[int]:
    with db.session() as session:
        return {
            i for i in session.execute(select(ProviderEvent.message_id)).scalars() if i is not None
        }


def test_finished_rows_past_the_cutoff_go_with_their_events_and_nothing_else(
    services: Services,
) -> None:
    db, now = services.db, services.clock.now()
    old, recent = now - timedelta(days=DAYS, seconds=1), now - timedelta(days=DAYS - 1)
    doomed = {add_message(db, status, old, events=2) for status in FINISHED}
    kept_old = {add_message(db, status, old) for status in MessageStatus if status not in FINISHED}
    kept_recent = {add_message(db, status, recent) for status in MessageStatus}
    stray = add_message(db, MessageStatus.SENT, recent, events=0)
    with db.session() as session:  # an event of no message of ours stays too
        session.add(ProviderEvent(provider="twilio", event_key="x", kind="sent", received_at=old))

    done = retention.prune(db, now, DAYS)

    assert done.messages == len(FINISHED) == 7
    assert done.provider_events == 2 * len(FINISHED)
    assert message_ids(db) == kept_old | kept_recent | {stray}
    assert event_message_ids(db) == kept_old | kept_recent
    assert not doomed & message_ids(db)
    with db.session() as session:
        assert (
            session.execute(select(func.count()).select_from(ProviderEvent)).scalar()
            == len(kept_old | kept_recent) + 1
        )
        [audited] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "retention_deleted")
        ).scalars()
    assert audited.actor == retention.SYSTEM
    assert audited.detail["messages"] == 7
    # Run again: nothing left to delete, and no audit row for nothing.
    again = retention.prune(db, now, DAYS)
    assert (again.messages, again.provider_events) == (0, 0)


def test_more_rows_than_a_batch_are_deleted_batch_by_batch(services: Services) -> None:
    db, now = services.db, services.clock.now()
    old = now - timedelta(days=DAYS + 30)
    for _ in range(25):
        add_message(db, MessageStatus.DELIVERED, old, events=0)
    kept = add_message(db, MessageStatus.FAILED, old, events=0)

    done = retention.prune(db, now, DAYS, batch_size=10)

    assert (done.messages, done.batches) == (25, 3)
    assert message_ids(db) == {kept}


def test_a_dry_run_counts_and_changes_nothing(services: Services) -> None:
    db, now = services.db, services.clock.now()
    old = now - timedelta(days=DAYS + 1)
    for status in (MessageStatus.SENT, MessageStatus.CANCELLED, MessageStatus.SKIPPED):
        add_message(db, status, old, events=1)
    add_message(db, MessageStatus.PENDING, old)
    before = message_ids(db)

    counted = retention.prune(db, now, DAYS, dry_run=True)

    assert (counted.messages, counted.provider_events, counted.dry_run) == (3, 3, True)
    assert message_ids(db) == before
    assert len(event_message_ids(db)) == 4
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar() == 0
    assert retention.prune(db, now, DAYS).messages == 3


@pytest.fixture
def pg_services(make_services: object, clean_postgres_url: str) -> Services:
    assert callable(make_services)
    made: Services = make_services(clean_postgres_url)
    return made


@pytest.mark.postgres
def test_a_row_another_transaction_holds_is_skipped_not_waited_on(pg_services: Services) -> None:
    db, now = pg_services.db, pg_services.clock.now()
    old = now - timedelta(days=DAYS + 1)
    first = add_message(db, MessageStatus.SENT, old)
    held = add_message(db, MessageStatus.SENT, old)
    last = add_message(db, MessageStatus.SENT, old)
    results: list[retention.Pruned] = []
    with db.engine.connect() as other:
        other.execute(
            text("SELECT id FROM scheduled_messages WHERE id = :id FOR UPDATE"), {"id": held}
        )
        pruning = threading.Thread(target=lambda: results.append(retention.prune(db, now, DAYS)))
        pruning.start()
        pruning.join(timeout=30)
        waited = pruning.is_alive()
        other.rollback()  # releases the row (and a waiting prune, if it did wait)
    pruning.join()
    assert not waited, "retention waited on a row another transaction holds"
    assert results[0].messages == 2
    assert message_ids(db) == {held}
    assert first not in message_ids(db) and last not in message_ids(db)
    # Released, it goes at the next run.
    assert retention.prune(db, now, DAYS).messages == 1


def test_the_retention_job_runs_daily_on_the_setting(
    make_services: object, sqlite_url: str
) -> None:
    from workers.app import beat_schedule

    assert callable(make_services)
    services: Services = make_services(sqlite_url, retention_days=30)
    schedule = beat_schedule(services.settings)
    assert schedule["retention"]["task"] == "campaigns.retention"
    assert schedule["retention"]["schedule"] == 86400.0
    now = services.clock.now()
    add_message(services.db, MessageStatus.SENT, now - timedelta(days=31))
    recent = add_message(services.db, MessageStatus.SENT, now - timedelta(days=29))
    done = upkeep.BY_NAME["retention"].run(services, None)  # type: ignore[arg-type]
    assert done == {"messages": 1, "provider_events": 1, "batches": 1}
    assert message_ids(services.db) == {recent}


def test_the_retention_setting_is_at_least_a_day() -> None:
    assert make_settings().retention_days == 730
    with pytest.raises(ValueError, match="CAMPAIGNS_RETENTION_DAYS must be at least 1"):
        make_settings(retention_days=0)
