"""The web stays responsive while webhooks wait for the database: their database work runs in
worker threads (never on the event loop), bounded by lock and statement timeouts below the
providers' webhook timeout."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator

import httpx2 as httpx
import pytest
import uvicorn
from sqlalchemy import Engine, create_engine, select, text
from twilio.request_validator import RequestValidator

from campaigns import heartbeats
from campaigns.bootstrap import Services, build
from campaigns.storage.models import ScheduledMessage
from campaigns.web.app import create_app
from tests.conftest import make_settings
from tests.integration.processes import free_port, wait_until
from tests.integration.test_webhooks import PUBLIC, STATUS, TOKEN, sent

pytestmark = pytest.mark.postgres


@pytest.fixture
def server(make_services: object, clean_postgres_url: str) -> Iterator[tuple[str, Services]]:
    assert callable(make_services)
    services: Services = make_services(
        clean_postgres_url, public_url=PUBLIC, twilio_auth_token=TOKEN
    )
    port = free_port()
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="warning")
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    wait_until(lambda: web.started, 15, "the web app")
    yield f"http://127.0.0.1:{port}", services
    web.should_exit = True
    thread.join(10)


def test_health_answers_while_a_status_callback_waits_for_a_patient_lock(
    server: tuple[str, Services], postgres_url: str
) -> None:
    base, services = server
    row = sent(services, "sms")
    # A failure takes the patient's lock (it may suppress, re-plan or halt).
    params = {"MessageSid": str(row.provider_id), "MessageStatus": "failed", "ErrorCode": "30007"}
    url = f"{STATUS}?m={row.id}"
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + url, params)
    holder = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    lock = holder.connect()
    transaction = lock.begin()
    patient_id = lock.execute(
        text(
            "SELECT p.id FROM patients p JOIN enrollments e ON e.patient_id = p.id "
            "WHERE e.id = :e FOR UPDATE OF p"
        ),
        {"e": row.enrollment_id},
    ).scalar_one()
    answers: list[int] = []

    def callback() -> None:
        with httpx.Client(timeout=30) as client:
            answered = client.post(
                base + url,
                content=urllib.parse.urlencode(params),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
            )
            answers.append(answered.status_code)

    # Readiness also asks whether beat ticked lately: it did, so only a hang could fail it.
    heartbeats.seen(services.db, heartbeats.Kind.BEAT, ["beat"], services.clock.now(), "test")
    waiting = threading.Thread(target=callback)
    waiting.start()
    try:
        _health_while_waiting(base, holder, waiting)
    finally:
        transaction.rollback()
        lock.close()
        waiting.join(15)
        holder.dispose()  # even on failure: a leaked connection warns in a later test
    assert answers == [204]
    with services.db.session() as session:
        status = session.execute(
            select(ScheduledMessage.status).where(ScheduledMessage.id == row.id)
        ).scalar_one()
    assert status == "failed"
    assert patient_id


def _waits_on_a_lock(holder: Engine) -> bool:
    """Whether any session of the test database is waiting for a lock right now."""
    with holder.connect() as look:
        return bool(
            look.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def _health_while_waiting(base: str, holder: Engine, waiting: threading.Thread) -> None:
    wait_until(lambda: _waits_on_a_lock(holder), 15, "the status callback to wait for the lock")
    # The lock is held until after this: health that queued behind the callback would never
    # answer, so answering at all (the timeout only guards against a hang) is the proof.
    with httpx.Client(timeout=30) as client:
        assert client.get(base + "/healthz").status_code == 200
        assert client.get(base + "/readyz").status_code == 200
    assert waiting.is_alive(), "the callback should still be waiting for the lock"
    assert _waits_on_a_lock(holder)


def test_news_that_only_moves_a_message_forward_needs_no_patient_lock(
    server: tuple[str, Services], clean_postgres_url: str
) -> None:
    """`sent` and `delivered` callbacks (most of the traffic) are applied while the patient's
    lock is held elsewhere: they never queue behind a reply or a cancellation."""
    base, services = server
    row = sent(services, "sms")
    holder = create_engine(clean_postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with holder.connect() as lock, lock.begin():
        lock.execute(
            text(
                "SELECT p.id FROM patients p JOIN enrollments e ON e.patient_id = p.id "
                "WHERE e.id = :e FOR UPDATE OF p"
            ),
            {"e": row.enrollment_id},
        )
        for status in ("sent", "delivered"):
            params = {"MessageSid": str(row.provider_id), "MessageStatus": status}
            url = f"{STATUS}?m={row.id}"
            signature = RequestValidator(TOKEN).compute_signature(PUBLIC + url, params)
            answered = _answer_without_waiting_for_the_lock(base + url, params, signature, holder)
            assert answered == 204
    holder.dispose()
    with services.db.session() as session:
        status = session.execute(
            select(ScheduledMessage.status).where(ScheduledMessage.id == row.id)
        ).scalar_one()
    assert status == "delivered"


def _answer_without_waiting_for_the_lock(
    url: str, params: dict[str, str], signature: str, holder: Engine
) -> int:
    """Post a status callback while the test holds its patient's lock: its status code, or a
    failure as soon as the callback waits for that lock (it would then wait for good)."""
    answers: list[int] = []

    def post() -> None:
        answered = httpx.post(
            url,
            content=urllib.parse.urlencode(params),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
            timeout=30,  # only against a hang: lock waits are watched below
        )
        answers.append(answered.status_code)

    callback = threading.Thread(target=post)
    callback.start()
    wait_until(
        lambda: not callback.is_alive() or _waits_on_a_lock(holder), 30, "the callback to answer"
    )
    assert not _waits_on_a_lock(holder), "the callback waits for the patient's lock"
    callback.join(30)
    [status] = answers
    return status


def test_web_processes_bound_their_database_waits(postgres_url: str) -> None:
    services = build(make_settings(database_url=postgres_url), web=True)
    try:
        with services.db.session() as session:
            lock = session.execute(text("SHOW lock_timeout")).scalar_one()
            statement = session.execute(text("SHOW statement_timeout")).scalar_one()
        assert (lock, statement) == ("5s", "10s")
    finally:
        services.close()
    worker = build(make_settings(database_url=postgres_url))
    try:
        with worker.db.session() as session:
            assert session.execute(text("SHOW statement_timeout")).scalar_one() == "0"
    finally:
        worker.close()
