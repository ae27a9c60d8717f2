"""`campaigns retention` and `campaigns patient export|erase` as operators run them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import MessageStatus
from campaigns.storage.db import Database
from campaigns.storage.models import AuditEvent, Patient, ScheduledMessage
from tests.integration.helpers import enroll
from tests.integration.processes import campaigns, env_with
from tests.integration.test_retention import add_message, message_ids

pytestmark = pytest.mark.slow
#: The CLI runs on the system clock: rows from long ago, and rows not yet old whatever today.
LONG_AGO = datetime(2020, 1, 6, tzinfo=UTC)
NOT_YET_OLD = datetime(2099, 1, 5, tzinfo=UTC)


@pytest.fixture
def env(sqlite_url: str) -> dict[str, str]:
    return env_with(CAMPAIGNS_DATABASE_URL=sqlite_url, CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00")


def test_retention_dry_run_counts_then_deletes(sqlite_url: str, env: dict[str, str]) -> None:
    db = Database.from_url(sqlite_url)
    try:
        for status in (MessageStatus.SENT, MessageStatus.CANCELLED, MessageStatus.SKIPPED):
            add_message(db, status, LONG_AGO)
        kept = {
            add_message(db, MessageStatus.PENDING, LONG_AGO),
            add_message(db, MessageStatus.SENT, NOT_YET_OLD),
        }
        dry = campaigns("retention", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "would delete 3 messages and 3 provider events" in dry.stdout
        assert len(message_ids(db)) == 5

        done = campaigns("retention", "--json", env={**env, "CAMPAIGNS_RETENTION_DAYS": "30"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["messages"] == 3
        assert message_ids(db) == kept
        with db.session() as session:
            actors = session.execute(
                select(AuditEvent.actor).where(AuditEvent.action == "retention_deleted")
            ).scalars()
            assert list(actors) == ["cli"]

        bad = campaigns("retention", env={**env, "CAMPAIGNS_RETENTION_DAYS": "0"})
        assert bad.returncode == 2
        assert "CAMPAIGNS_RETENTION_DAYS must be at least 1" in bad.stderr
    finally:
        db.dispose()


def test_patient_export_and_erase(
    make_services: object, sqlite_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    assert callable(make_services)
    services: Services = make_services(sqlite_url)
    her = enroll(services, weeks=20, name="Nia Roberts", phone="+447400900777")

    exported = campaigns("patient", "export", str(her.patient_id), env=env)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["patient"]["name"] == "Nia Roberts"
    assert [e["id"] for e in document["enrollments"]] == [her.enrollment_id]

    unknown = campaigns("patient", "erase", "9999", "--yes", env=env)
    assert unknown.returncode == 1
    assert "no patient 9999" in unknown.stderr

    declined = campaigns("patient", "erase", str(her.patient_id), env=env, input="n\n")
    assert declined.returncode == 1
    assert "not erased" in declined.stderr
    with services.db.session() as session:
        assert session.get(Patient, her.patient_id).phone == "+447400900777"  # type: ignore[union-attr]

    erased = campaigns("patient", "erase", str(her.patient_id), env=env, input="y\n")
    assert erased.returncode == 0, erased.stderr
    assert f"patient {her.patient_id} erased" in erased.stdout
    assert "+447400900777" not in erased.stdout + erased.stderr
    with services.db.session() as session:
        patient = session.get(Patient, her.patient_id)
        assert patient is not None and patient.phone is None and patient.erased_at is not None
        assert not session.execute(
            select(ScheduledMessage.id).where(
                ScheduledMessage.enrollment_id == her.enrollment_id,
                ScheduledMessage.status == MessageStatus.PENDING.value,
            )
        ).all()
        actions = session.execute(
            select(AuditEvent.action).where(
                AuditEvent.patient_id == her.patient_id, AuditEvent.actor == "cli"
            )
        ).scalars()
        assert list(actions) == ["subject_access_exported", "erased"]

    again = campaigns("patient", "erase", str(her.patient_id), "--yes", env=env)
    assert again.returncode == 0 and "already erased" in again.stdout
