"""End to end on the production shape: a real Celery worker and beat on real Redis and PostgreSQL.

The worker and beat run the exact commands docker-compose.yml gives them; the patient is
enrolled with the CLI; nothing in this test calls the application in-process.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from campaigns.storage.db import Database
from tests.conftest import REDIS_URL, _empty
from tests.integration.processes import (
    campaigns,
    compose_command,
    env_with,
    spawn,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


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
        CAMPAIGNS_SMS_PROVIDER="outbox",
        CAMPAIGNS_EMAIL_PROVIDER="outbox",
        CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00",  # the test may run at any hour
        CAMPAIGNS_HOLIDAY_REGION="none",
        CAMPAIGNS_DISPATCH_INTERVAL_SECONDS="0.5",
        CAMPAIGNS_SEND_CONCURRENCY="4",
    )
    client.flushdb()
    database = Database.from_url(postgres_url, pool_size=1)
    _empty(database)
    database.dispose()


def start(service: str, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    argv = compose_command(service)
    if service == "beat":
        argv[argv.index("--schedule") + 1] = str(tmp_path / "beat-schedule")
    return spawn(argv, env, tmp_path / f"{service}.log")


def timeline(phone: str, env: dict[str, str]) -> list[dict[str, object]]:
    result = campaigns("timeline", phone, "--json", env=env)
    assert result.returncode == 0, result.stderr
    entries: list[dict[str, object]] = json.loads(result.stdout)
    return entries


def test_worker_and_beat_take_a_due_message_from_enrolment_to_the_outbox(
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
    assert "campaigns.dispatch_due" in beat_log, beat_log[-2000:]
    assert phone not in worker_log and "ada@example.com" not in worker_log  # no PHI in logs
