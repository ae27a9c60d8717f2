"""The web app in-process: health, readiness, metrics, and the staff pages and their actions."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from campaigns import halts, heartbeats
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import Channel
from campaigns.runtime import InlineQueue, tick
from campaigns.web.app import create_app
from tests.integration.helpers import edd_at, enroll, enrollment, rows
from tests.integration.staff import StaffClient, sign_in


@pytest.fixture
def anonymous(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


@pytest.fixture
def client(anonymous: TestClient, services: Services) -> StaffClient:
    return sign_in(anonymous, services, "admin")


def test_health_readiness_and_metrics(client: StaffClient, services: Services) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    silent = client.get("/readyz")  # nothing has run beat's work yet
    assert silent.status_code == 503 and silent.json()["beat"] == "never ticked"
    heartbeats.seen(services.db, heartbeats.Kind.BEAT, ["beat"], services.clock.now(), "t")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["campaigns"] == ["leg-cramps"]
    enroll(services, weeks=20)
    metrics = client.get("/metrics").text
    assert 'campaigns_messages{status="pending"}' in metrics
    assert re.search(r"^campaigns_due_messages 2\.0$", metrics, re.M)
    assert re.search(r'^campaigns_channel_halted\{channel="sms"\} 0\.0$', metrics, re.M)


def test_metrics_show_a_halted_channel(client: StaffClient, services: Services) -> None:
    halts.halt(services.db, Channel.EMAIL, "sendgrid", "401", "bad key", services.clock.now())
    metrics = client.get("/metrics").text
    assert re.search(r'^campaigns_channel_halted\{channel="email"\} 1\.0$', metrics, re.M)
    assert re.search(r'^campaigns_channel_halted\{channel="sms"\} 0\.0$', metrics, re.M)


def test_readiness_fails_when_the_database_is_missing(
    make_services: object, tmp_path: object
) -> None:
    assert callable(make_services)
    broken: Services = make_services(f"sqlite:///{tmp_path}/never-migrated.db")
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_enroll_form_explains_a_bad_field_and_writes_nothing(
    client: StaffClient, services: Services
) -> None:
    form = {
        "name": "Dee Example",
        "phone": "0207 946 0000",
        "edd": "2027-01-10",
        "edd_source": "scan",
        "tz": "Europe/London",
        "language": "en",
        "channels": "sms",
        "consent": "programme",
    }
    page = client.post("/staff/enrol", data=form)
    assert page.status_code == 400
    assert "There is a problem" in page.text and 'href="#phone">Mobile number:' in page.text
    assert 'aria-invalid="true"' in page.text
    assert 'value="Dee Example"' in page.text  # what staff typed is kept
    assert rows(services) == []


def test_enroll_form_creates_the_patient_and_shows_the_plan(
    client: StaffClient, services: Services
) -> None:
    today = services.clock.now().date()
    form = {
        "name": "Dee Example",
        "phone": "07400 222333",
        "email": "dee@example.com",
        "edd": edd_at(today, 30).isoformat(),
        "edd_source": "scan",
        "tz": "Europe/London",
        "language": "en",
        "channels": ["sms", "email"],
        "consent": ["programme"],
    }
    page = client.post("/staff/enrol", data=form, follow_redirects=True)
    assert page.status_code == 200
    assert "Enrolled;" in page.text and "Dee Example" in page.text
    assert "clot-warning-signs" in page.text and "catch up" in page.text
    listing = client.get("/staff/patients", params={"q": "Dee"})
    assert "Dee Example" in listing.text and "30 weeks 0 days (third trimester)" in listing.text


def test_staff_actions_change_the_plan(client: StaffClient, services: Services) -> None:
    done = enroll(services, weeks=20, name="Eve Example")
    page = f"/staff/patients/{done.patient_id}"
    url = f"/staff/enrollments/{done.enrollment_id}"
    refused = client.post(f"{url}/loss", data={}, follow_redirects=True)
    assert "tick the box" in refused.text and enrollment(services, done.enrollment_id).status == (
        "active"
    )
    paused = client.post(f"{url}/pause", follow_redirects=True)
    assert "Paused;" in paused.text and enrollment(services, done.enrollment_id).status == "paused"
    assert "Resume messages" in client.get(page).text
    client.post(f"{url}/resume")
    new_edd = edd_at(services.clock.now().date(), 19).isoformat()
    changed = client.post(
        f"{url}/edd", data={"edd": new_edd, "edd_source": "scan"}, follow_redirects=True
    )
    assert "Due date changed" in changed.text
    bad = client.post(f"{url}/birth", data={"birth_date": "2099-01-01"}, follow_redirects=True)
    assert "Birth date: 2099-01-01 is in the future" in bad.text
    ended = client.post(f"{url}/loss", data={"confirm": "yes"}, follow_redirects=True)
    assert "Loss recorded." in ended.text
    assert enrollment(services, done.enrollment_id).status == "ended_loss"
    assert not [r for r in rows(services, done.enrollment_id) if r.status == "pending"]
    assert client.post("/staff/enrollments/999/pause").status_code == 404


def test_outbox_shows_what_was_sent(client: StaffClient, services: Services) -> None:
    from campaigns.providers.local import LocalEmailSender, LocalSmsSender

    services.sms, services.email = LocalSmsSender(), LocalEmailSender()
    done = enroll(services, weeks=20, name="Fay Example")
    assert tick(services, InlineQueue(services)) == 2
    outbox = client.get("/staff/outbox")
    assert "Fay Example" in outbox.text and "Santi: thanks for joining" in outbox.text
    email = next(
        r for r in rows(services, done.enrollment_id) if r.channel == "email" and r.status == "sent"
    )
    detail = client.get(f"/staff/outbox/{email.id}")
    assert detail.status_code == 200
    assert f'src="/staff/messages/{email.id}/email"' in detail.text
    framed = client.get(f"/staff/outbox/{email.id}/email")
    assert "Welcome to Santi leg-care tips" in framed.text
    # The email keeps its own styles and nothing else, and only our own page may frame it.
    policy = framed.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in policy and "script-src" not in policy
    assert client.get("/staff/").status_code == 200


def test_preview_page(client: StaffClient) -> None:
    page = client.get(
        "/staff/preview",
        params={"edd": "2027-06-01", "tz": "Europe/London", "enrolled": "2026-11-02"},
    )
    assert page.status_code == 200
    assert "cramps-what-to-expect" in page.text and "Santi: calf or foot cramps" in page.text
    bad = client.get("/staff/preview", params={"edd": "June", "tz": "Europe/London"})
    assert "edd: &#39;June&#39; is not a date" in bad.text
