"""The logs of a whole run name no patient: serve, a worker and beat, all at DEBUG in JSON,
through enrolment, sends, replies (a danger sign, BOOK, STOP, an unknown number) and staff
pages (a search by phone number included), are scanned for every seeded patient's name,
phone number (both ways of writing it), email address, every message and reply text, and
the booking token. Also: every line is JSON with an event name, and an idle worker and beat
say nothing at INFO."""

from __future__ import annotations

import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import httpx2 as httpx
import pytest
import redis
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from campaigns import heartbeats
from campaigns.storage.db import Database
from campaigns.storage.models import Heartbeat, InboundMessage, ScheduledMessage
from tests.conftest import REDIS_URL, _empty
from tests.integration.processes import (
    Spawned,
    campaigns,
    compose_command,
    env_with,
    free_port,
    spawn,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
TOKEN = "test_auth_token_0123456789abcdef"
BROKER = REDIS_URL.rsplit("/", 1)[0] + "/12"
PATIENTS = [
    ("Rhiannon Quillfeather", "+447400123401", "rhiannon.q@example.com"),
    ("Zofia Brzeczyszczyk", "+447400123402", "zofia.b@example.org"),
    ("Oluwaseun Adebayo-Marsh", "+447400123403", "seun.am@example.net"),
]
STAFF_EMAIL, STAFF_PASSWORD = "ops.lead@clinic.example", "correct horse battery staple 9"
REPLIES = ["my leg is swollen and warm since yesterday", "BOOK", "STOP"]
STRANGER = ("+447400999111", "hello is this the physio clinic on Mill Lane")


@pytest.fixture
def env(postgres_url: str) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield env_with(
        CAMPAIGNS_DATABASE_URL=postgres_url,
        CAMPAIGNS_BROKER_URL=BROKER,
        CAMPAIGNS_SMS_PROVIDER="local",
        CAMPAIGNS_EMAIL_PROVIDER="local",
        CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00",
        CAMPAIGNS_HOLIDAY_REGION="none",
        CAMPAIGNS_DISPATCH_INTERVAL_SECONDS="0.5",
        CAMPAIGNS_HEARTBEAT_SECONDS="1",
        CAMPAIGNS_BOOKING_URL="https://book.example/physio",
        TWILIO_AUTH_TOKEN=TOKEN,
        CAMPAIGNS_LOG_FORMAT="json",
    )
    client.flushdb()
    database = Database.from_url(postgres_url, pool_size=1)
    _empty(database)
    database.dispose()


def _start(service: str, env: dict[str, str], tmp_path: Path) -> Spawned:
    argv = compose_command(service)
    if service == "beat":
        argv[argv.index("--schedule") + 1] = str(tmp_path / "beat-schedule")
    health = {"CAMPAIGNS_HEALTH_DIR": str(tmp_path)}
    return spawn(argv, {**env, **health}, tmp_path / f"{service}.log")


def _enrol(env: dict[str, str]) -> None:
    due = (datetime.now(UTC).date() + timedelta(days=140)).isoformat()
    for name, phone, email in PATIENTS:
        done = campaigns(
            "enroll",
            *("--name", name, "--phone", phone, "--email", email, "--edd", due),
            *("--edd-source", "scan", "--channels", "sms,email", "--consent", "programme"),
            *("--tz", "Europe/London"),
            env=env,
        )
        assert done.returncode == 0, done.stderr
    added = campaigns(
        "users", "add", STAFF_EMAIL, "--role", "admin", "--password-stdin",
        env=env, input=STAFF_PASSWORD + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr


def _sent(database: Database) -> int:
    with database.session() as session:
        return int(
            session.execute(
                select(func.count()).where(ScheduledMessage.sent_at.is_not(None))
            ).scalar_one()
        )


def _reply(base: str, sender: str, body: str) -> list[str]:
    params = {
        "MessageSid": f"SM{uuid.uuid4().hex}",
        "AccountSid": "AC" + "a" * 32,
        "From": sender,
        "To": "+447700900000",
        "Body": body,
    }
    path = "/webhooks/twilio/sms"
    signature = RequestValidator(TOKEN).compute_signature(base + path, params)
    answer = httpx.post(
        base + path,
        content=urllib.parse.urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return [m.text or "" for m in ElementTree.fromstring(answer.text)]


def _staff_pages(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        page = client.get("/staff/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        signed = client.post(
            "/staff/login",
            data={"email": STAFF_EMAIL, "password": STAFF_PASSWORD, "csrf_token": token[1]},
        )
        assert signed.status_code == 303, signed.text
        listing = client.get("/staff/patients", params={"q": PATIENTS[0][1]})
        assert listing.status_code == 200 and PATIENTS[0][0] in listing.text
        for path in ("/staff/", "/staff/patients/1", "/staff/alerts", "/staff/messages"):
            assert client.get(path).status_code == 200, path
        assert client.get("/staff/outbox", params={"q": PATIENTS[1][2]}).status_code == 307
        assert client.get("/staff/messages", params={"patient": PATIENTS[1][2]}).status_code == 200
        assert client.get("/staff/messages/1").status_code == 200


def _secrets(database: Database, tokens: list[str]) -> list[str]:
    """Everything that must never be logged: details, texts, tokens."""
    found = [STAFF_PASSWORD, STRANGER[0], STRANGER[1], *REPLIES[:1], *tokens]
    for name, phone, email in PATIENTS:
        national = "0" + phone.removeprefix("+44")
        found += [name, *name.split(), phone, phone.removeprefix("+"), national, email]
        found.append(urllib.parse.quote(phone))  # as a search in a URL
    with database.session() as session:
        bodies = session.execute(
            select(ScheduledMessage.body).where(ScheduledMessage.body.is_not(None))
        ).scalars()
        # A sentence from each text, long enough to be its own (not "Santi:").
        found += [line for body in bodies for line in (body or "").splitlines() if len(line) > 24]
        found += [b for b in session.execute(select(InboundMessage.body)).scalars() if b]
    return sorted({f for f in found if f.strip()})


def test_a_whole_run_logs_no_patient_detail_text_or_token(
    env: dict[str, str], tmp_path: Path
) -> None:
    _enrol(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    debug = {**env, "CAMPAIGNS_LOG_LEVEL": "DEBUG", "CAMPAIGNS_PUBLIC_URL": base}
    serve = spawn(
        [*compose_command("web")[:2], "--host", "127.0.0.1", "--port", str(port)],
        debug,
        tmp_path / "serve.log",
    )
    worker, beat = _start("worker", debug, tmp_path), _start("beat", debug, tmp_path)
    database = Database.from_url(env["CAMPAIGNS_DATABASE_URL"], pool_size=1)
    tokens: list[str] = []
    try:
        wait_until(lambda: _sent(database) >= 6, 90, "the welcome texts and emails to go")
        phone = PATIENTS[0][1]
        [safety] = _reply(base, phone, REPLIES[0])
        assert "111" in safety
        # Not the same patient: BOOK within a day of a danger sign gets the safety answer.
        booking = _reply(base, PATIENTS[1][1], REPLIES[1])[0]
        tokens += [w.rsplit("/b/", 1)[1] for w in booking.split() if "/b/" in w]
        _reply(base, phone, REPLIES[2])
        _reply(base, *STRANGER)
        _staff_pages(base)
    finally:
        logs = {"serve": stop(serve), "worker": stop(worker), "beat": stop(beat)}
    secrets = _secrets(database, tokens)
    database.dispose()
    assert len(secrets) > 30
    for process, text in logs.items():
        lines = [line for line in text.splitlines() if line.startswith("{")]
        assert len(lines) > 20, (process, text[-2000:])
        assert all("event" in json.loads(line) for line in lines), process
        for secret in secrets:
            assert secret not in text, f"{process} logged {secret[:6]}..."
    assert "/b/" in booking  # the run did reach the parts that carry a token


def test_an_idle_worker_and_beat_say_nothing_at_info(env: dict[str, str], tmp_path: Path) -> None:
    worker, beat = _start("worker", env, tmp_path), _start("beat", env, tmp_path)
    database = Database.from_url(env["CAMPAIGNS_DATABASE_URL"], pool_size=1)

    def queue_beats() -> int:
        with database.session() as session:
            return int(
                session.execute(
                    select(func.coalesce(func.sum(Heartbeat.count), 0)).where(
                        Heartbeat.kind == heartbeats.Kind.QUEUE.value
                    )
                ).scalar_one()
            )

    def informative(process: Spawned) -> list[str]:
        text = process.log_path.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if line.startswith("{") and json.loads(line)["level"] != "DEBUG"
        ]

    try:
        wait_until(lambda: queue_beats() >= 4, 60, "the worker to answer its heartbeats")
        settled = {p: len(informative(p)) for p in (worker, beat)}
        seen = queue_beats()
        # Ten more heartbeats and dispatch ticks (nothing is due): no new INFO line.
        wait_until(lambda: queue_beats() >= seen + 10, 60, "ten more heartbeats")
        grown = {p: informative(p)[settled[p] :] for p in (worker, beat)}
    finally:
        stop(worker)
        stop(beat)
        database.dispose()
    assert grown == {worker: [], beat: []}, grown
