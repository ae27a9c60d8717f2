"""The operator's page: every process seen, each periodic job's last run, provider error rates
over the last hour, and the failed and unconfirmed lists, with ids and counts, never a
patient's details."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from campaigns import heartbeats, periodic, queries
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import MessageStatus
from campaigns.storage.models import Patient, ScheduledMessage
from campaigns.web import operations
from campaigns.web.app import create_app
from tests.integration.helpers import enroll, rows
from tests.integration.staff import sign_in


def _set(services: Services, message_id: int, **values: object) -> None:
    with services.db.session() as session:
        row = session.get(ScheduledMessage, message_id)
        assert row is not None
        for name, value in values.items():
            setattr(row, name, value)


def _patient_details(services: Services) -> list[str]:
    with services.db.session() as session:
        return [
            detail
            for p in session.query(Patient).all()
            for detail in (p.name, p.phone, p.email)
            if detail
        ]


def test_provider_outcomes_count_each_result_once_within_the_hour(services: Services) -> None:
    now = services.clock.now()
    for weeks in (20, 24, 28):
        enroll(services, weeks=weeks)
    ids = [r.id for r in rows(services) if r.channel == "sms"]
    assert len(ids) >= 6
    recent, old = now - timedelta(minutes=5), now - timedelta(hours=2)
    sms = {"provider": "twilio"}
    _set(services, ids[0], status=MessageStatus.DELIVERED, sent_at=recent, **sms)
    _set(services, ids[1], status=MessageStatus.SENT, sent_at=recent, **sms)
    _set(services, ids[2], status=MessageStatus.UNDELIVERED, sent_at=recent, **sms)
    _set(services, ids[3], status=MessageStatus.FAILED, updated_at=recent, **sms)
    _set(services, ids[4], status=MessageStatus.UNKNOWN, updated_at=recent, **sms)
    # Outside the hour: counted nowhere.
    _set(services, ids[5], status=MessageStatus.FAILED, updated_at=old, **sms)
    with services.db.session() as session:
        [twilio] = [
            o
            for o in queries.provider_outcomes(session, now - operations.ERROR_RATE_OVER)
            if o.provider == "twilio"
        ]
    assert (twilio.accepted, twilio.not_delivered, twilio.failed, twilio.unknown) == (2, 1, 1, 1)
    assert twilio.error_ratio == pytest.approx(3 / 5)


def test_the_ops_page_shows_processes_jobs_and_error_rates_but_no_patient(
    services: Services,
) -> None:
    now = services.clock.now()
    heartbeats.seen(services.db, heartbeats.Kind.BEAT, ["beat"], now, "beat-host:11")
    heartbeats.seen(services.db, heartbeats.Kind.QUEUE, ["sms"], now, "worker-host:22")
    assert periodic.claim(services.db, "extend-plans", 3600, now, "beat-host:11")
    periodic.run(services.db, services.clock, "extend-plans", lambda: None, "worker-host:22")
    done = enroll(services, weeks=20)
    first = next(r for r in rows(services, done.enrollment_id) if r.channel == "sms")
    _set(
        services,
        first.id,
        status=MessageStatus.FAILED,
        provider="twilio",
        error_code="30007",
        updated_at=now,
    )
    with TestClient(create_app(services), follow_redirects=False) as client:
        operator = sign_in(client, services, "operator")
        page = operator.get("/staff/ops").text
        failed = operator.get("/staff/ops/messages/failed").text
    assert "Ready:" in page
    assert "beat-host:11" in page and "worker-host:22" in page
    assert "extend-plans" in page
    assert re.search(r"<td>SMS</td><td>twilio</td><td>0</td><td>0</td><td>1</td>", page)
    assert 'href="/staff/ops/messages/failed"' in page
    assert f"<td>{first.id}</td>" in failed and "30007" in failed
    for detail in _patient_details(services):
        assert detail not in page and detail not in failed


def test_the_page_says_why_the_service_is_not_ready(services: Services) -> None:
    with TestClient(create_app(services), follow_redirects=False) as client:
        page = sign_in(client, services, "operator").get("/staff/ops").text
    assert "Not ready." in page and "beat: never ticked" in page


def test_failed_messages_are_listed_by_id_in_keyset_pages(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "PAGE", 2)
    done = enroll(services, weeks=20)
    ids = sorted(r.id for r in rows(services, done.enrollment_id))[:3]
    for message_id in ids:
        _set(services, message_id, status=MessageStatus.UNKNOWN, reason="needs_review")
    with TestClient(create_app(services), follow_redirects=False) as client:
        operator = sign_in(client, services, "operator")
        first = operator.get("/staff/ops/messages/unknown").text
        listed = [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", first)]
        assert listed == [ids[2], ids[1]]
        older = re.search(r'href="\?before=(\d+)"', first)
        assert older and int(older.group(1)) == ids[1]
        second = operator.get(f"/staff/ops/messages/unknown?before={older.group(1)}").text
        assert [int(i) for i in re.findall(r"<tr><td>(\d+)</td>", second)] == [ids[0]]
        assert "before=" not in second
        assert operator.get("/staff/ops/messages/sent").status_code == 404
        assert operator.get("/staff/ops/messages/nonsense").status_code == 404
        clinician = sign_in(client, services, "clinician")
        assert clinician.get("/staff/ops/messages/failed").status_code == 403
