"""End to end on the production shape: a real Celery worker and beat on real Redis and PostgreSQL.

The worker and beat run the exact commands docker-compose.yml gives them; the patient is
enrolled with the CLI; nothing in this test calls the application in-process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from twilio.request_validator import RequestValidator

from campaigns import heartbeats
from campaigns.bootstrap import build
from campaigns.rules.clock import MovableClock
from campaigns.storage.db import Database
from campaigns.storage.models import Alert, PeriodicRun
from campaigns.web.app import create_app
from tests.conftest import REDIS_URL, _empty, make_settings
from tests.integration.processes import (
    Spawned,
    campaigns,
    compose_command,
    env_with,
    spawn,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
TOKEN = "test_auth_token_0123456789abcdef"


@pytest.fixture
def production_env(postgres_url: str) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield env_with(
        CAMPAIGNS_DATABASE_URL=postgres_url,
        CAMPAIGNS_BROKER_URL=REDIS_URL,
        CAMPAIGNS_SMS_PROVIDER="local",
        CAMPAIGNS_EMAIL_PROVIDER="local",
        CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00",  # the test may run at any hour
        CAMPAIGNS_HOLIDAY_REGION="none",
        CAMPAIGNS_DISPATCH_INTERVAL_SECONDS="0.5",
        CAMPAIGNS_SEND_CONCURRENCY="4",
        CAMPAIGNS_HEARTBEAT_SECONDS="1",
    )
    client.flushdb()
    database = Database.from_url(postgres_url, pool_size=1)
    _empty(database)
    database.dispose()


def start(service: str, env: dict[str, str], tmp_path: Path) -> Spawned:
    argv = compose_command(service)
    if service == "beat":
        argv[argv.index("--schedule") + 1] = str(tmp_path / "beat-schedule")
    return spawn(argv, env, tmp_path / f"{service}.log")


def timeline(phone: str, env: dict[str, str]) -> list[dict[str, object]]:
    result = campaigns("timeline", phone, "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, object]] = json.loads(result.stdout)
    return entries


def test_worker_and_beat_take_a_due_message_from_enrollment_to_the_outbox(
    production_env: dict[str, str], tmp_path: Path
) -> None:
    phone = "+447400088001"
    enrolled = campaigns(
        "enroll",
        "--name",
        "Ada Example",
        "--phone",
        phone,
        "--email",
        "ada@example.com",
        "--edd",
        "2027-04-01",
        "--edd-source",
        "scan",
        "--channels",
        "sms,email",
        "--consent",
        "programme",
        "--tz",
        "Europe/London",
        env=production_env,
    )
    assert enrolled.returncode == 0, enrolled.stderr

    worker = start("worker", production_env, tmp_path)
    beat = start("beat", production_env, tmp_path)
    try:

        def welcome_sent() -> bool:
            return {
                e["status"] for e in timeline(phone, production_env) if e["step"] == "welcome"
            } == {"sent"}

        wait_until(welcome_sent, 90, "the worker to send the welcome")
    finally:
        worker_log, beat_log = stop(worker), stop(beat)
    entries = [e for e in timeline(phone, production_env) if e["step"] == "welcome"]
    assert {e["channel"] for e in entries} == {"sms", "email"}
    sms = next(e for e in entries if e["channel"] == "sms")
    assert str(sms["provider_id"]).startswith("OBSM")
    assert str(sms["body"]).startswith("Santi: thanks for joining")
    assert sms["attempts"] == 1
    others = {e["status"] for e in timeline(phone, production_env) if e["step"] != "welcome"}
    assert others <= {"pending", "skipped", "planned"}  # nothing else was due
    assert "campaigns.send_batch" in worker_log, worker_log[-2000:]
    # Beat publishes quietly (DEBUG) but leaves its tick and its claims in the database.
    assert "Sending due task" not in beat_log, beat_log[-2000:]
    database = Database.from_url(production_env["CAMPAIGNS_DATABASE_URL"], pool_size=1)
    with database.session() as session:
        kinds = {kind for kind, _ in heartbeats.newest(session)}
        claimed = set(session.execute(select(PeriodicRun.name)).scalars())
    database.dispose()
    assert {heartbeats.Kind.BEAT, heartbeats.Kind.JOB, heartbeats.Kind.QUEUE} <= kinds
    assert {"dispatch-due", "heartbeat-send.sms"} <= claimed
    assert phone not in worker_log and "ada@example.com" not in worker_log  # no PHI in logs


def test_a_patient_replies_to_a_step_through_the_production_shape(
    production_env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    """Receives a step; a leg warning gets the safety answer and an alert, never a link; BOOK
    25 hours later gets a working link; after STOP no text is ever sent again."""
    phone = "+447400088002"
    enrolled = campaigns(
        "enroll",
        "--name",
        "Bea Example",
        "--phone",
        phone,
        "--email",
        "bea@example.com",
        "--edd",
        (datetime.now(UTC).date() + timedelta(days=140)).isoformat(),
        "--edd-source",
        "scan",
        "--channels",
        "sms,email",
        "--consent",
        "programme",
        "--tz",
        "Europe/London",
        env=production_env,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    clock = MovableClock(datetime.now(UTC))
    settings = make_settings(
        database_url=postgres_url,
        public_url="https://clinic.example",
        twilio_auth_token=TOKEN,
        booking_url="https://book.example/physio",
        sms_provider="local",
        email_provider="local",
    )
    web = build(settings, clock=clock)
    worker = start("worker", production_env, tmp_path)
    beat = start("beat", production_env, tmp_path)
    try:
        with TestClient(create_app(web), follow_redirects=False) as client:

            def sms_sent() -> list[dict[str, object]]:
                return [
                    e
                    for e in timeline(phone, production_env)
                    if e["channel"] == "sms" and e["status"] == "sent"
                ]

            wait_until(lambda: bool(sms_sent()), 90, "the worker to send the welcome text")

            def reply(body: str) -> list[str]:
                params = {
                    "MessageSid": f"SM{uuid.uuid4().hex}",
                    "AccountSid": "AC" + "a" * 32,
                    "From": phone,
                    "To": "+447700900000",
                    "Body": body,
                }
                signature = RequestValidator(TOKEN).compute_signature(
                    "https://clinic.example/webhooks/twilio/sms", params
                )
                response = client.post(
                    "/webhooks/twilio/sms",
                    data=params,
                    headers={"X-Twilio-Signature": signature},
                )
                assert response.status_code == 200, response.text
                return [m.text or "" for m in ElementTree.fromstring(response.text)]

            [safety] = reply("my leg is swollen and warm")
            assert "maternity unit, GP or 111 today" in safety and "/b/" not in safety
            assert "book" not in safety.lower()
            with web.db.session() as session:
                [alert] = session.execute(select(Alert)).scalars()
            assert (alert.severity, alert.kind, alert.acknowledged_at) == ("amber", "leg", None)

            clock.advance(timedelta(hours=25))
            [booking] = reply("BOOK")
            link = next(word for word in booking.split() if "/b/" in word)
            redirect = client.get(link.replace("https://clinic.example", ""))
            assert redirect.status_code == 303
            assert redirect.headers["location"].startswith("https://book.example/physio?")

            [stopped] = reply("STOP")
            assert "unsubscribed" in stopped
            texts_before = len(sms_sent())
            # Make every remaining step due now: the worker must still send none of the texts.
            with web.db.session() as session:
                session.execute(
                    text(
                        "UPDATE scheduled_messages SET next_attempt_at = now() - interval '1 s', "
                        "expires_at = NULL WHERE status IN ('pending', 'cancelled')"
                    )
                )

            def emails_went() -> bool:
                return all(
                    e["status"] != "pending"
                    for e in timeline(phone, production_env)
                    if e["channel"] == "email"
                )

            wait_until(emails_went, 90, "the worker to work through the due emails")
            assert len(sms_sent()) == texts_before
            sms_statuses = {
                e["status"] for e in timeline(phone, production_env) if e["channel"] == "sms"
            }
            assert sms_statuses <= {"sent", "cancelled", "skipped", "planned"}
    finally:
        stop(worker)
        stop(beat)
        web.close()
