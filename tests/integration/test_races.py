"""A cancellation racing a send: nothing is sent after the cancellation commits.

The send holds the patient's row lock (FOR SHARE; on SQLite the write lock) from its last check
to its record, and every cancellation takes the same lock first. These tests drive the two at
once on the real databases.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text, update

from campaigns import enrollments
from campaigns.bootstrap import Services
from campaigns.clock import MovableClock
from campaigns.delivery import claim_due
from campaigns.providers.base import OutgoingSms, SendReceipt
from campaigns.sending import Outcome
from campaigns.storage.models import ScheduledMessage
from tests.integration.helpers import enrol, rows


class BlockingSms:
    """Holds every send inside the provider call until released."""

    name = "blocking"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[OutgoingSms] = []

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        self.entered.set()
        assert self.release.wait(20), "test never released the provider"
        self.sent.append(message)
        return SendReceipt(self.name, f"B{message.message_id}")


def test_a_loss_recorded_during_a_send_waits_for_it_and_then_stops_the_rest(
    make_services: object, database_url: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url)
    blocking = BlockingSms()
    services.sms = blocking
    done = enrol(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches

    sender = threading.Thread(target=services.deliverer.send_one, args=(message_id, claimed.token))
    sender.start()
    assert blocking.entered.wait(10)
    finished: list[float] = []
    loss = threading.Thread(
        target=lambda: finished.append(
            enrollments.record_loss(
                services.db, done.enrollment_id, services.clock.now(), actor="test"
            )
        )
    )
    loss.start()
    time.sleep(0.5)
    assert loss.is_alive(), "the loss committed while a send was inside the provider call"
    blocking.release.set()
    sender.join(10)
    loss.join(30)
    assert finished and finished[0] > 0
    statuses = {r.id: r.status for r in rows(services, done.enrollment_id)}
    assert statuses.pop(message_id) == "sent"  # it was already with the provider
    assert set(statuses.values()) <= {"cancelled", "skipped"}
    assert len(blocking.sent) == 1


def test_a_claimed_message_is_not_sent_once_a_loss_is_recorded(services: Services) -> None:
    done = enrol(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches
    enrollments.record_loss(services.db, done.enrollment_id, services.clock.now(), actor="t")
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.NOT_CLAIMED
    assert services.sms.sent == []  # type: ignore[attr-defined]


def test_a_pause_between_claim_and_send_is_honoured(services: Services) -> None:
    done = enrol(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches
    enrollments.pause(services.db, done.enrollment_id, services.clock.now(), actor="t")
    assert services.deliverer.send_batch([message_id], claimed.token) == {Outcome.NOT_CLAIMED: 1}


class WatchingSms:
    """On every call, looks (in its own connection) for a committed loss of this patient."""

    name = "watching"
    #: One value for the recipient's number; `breach` says whether it forbids the send.
    query = (
        "SELECT e.status FROM enrollments e JOIN patients p ON p.id = e.patient_id "
        "WHERE p.phone = :phone"
    )

    @staticmethod
    def breach(value: object) -> str | None:
        return f"sent after {value}" if value != "active" else None

    def __init__(self, url: str) -> None:
        self.engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1),
            isolation_level="AUTOCOMMIT",
            pool_size=16,
        )
        self.violations: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        # A provider call takes a while; a loss that commits at any point during it is a breach.
        time.sleep(random.uniform(0.005, 0.02))
        with self.engine.connect() as connection:
            value = connection.execute(text(self.query), {"phone": message.to}).scalar_one()
        breach = self.breach(value)
        with self.lock:
            self.calls += 1
            if breach:
                self.violations.append(f"message {message.message_id} {breach}")
        return SendReceipt(self.name, f"W{message.message_id}")


@pytest.mark.postgres
def test_random_losses_racing_many_sends_never_let_a_message_through(
    make_services: object, postgres_url: str, clock: MovableClock
) -> None:
    assert callable(make_services)
    services: Services = make_services(postgres_url, send_concurrency=12, plan_horizon_days=400)
    watching = WatchingSms(postgres_url)
    services.sms = watching
    patients = [enrol(services, weeks=12, channels="sms", email="") for _ in range(40)]
    with services.db.session() as session:  # every planned message is due at once
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.status == "pending")
            .values(next_attempt_at=clock.now() - timedelta(seconds=1))
        )
    lost = random.Random(7).sample(patients, 20)

    def sender() -> None:
        claimed = claim_due(services.db, clock.now(), 10_000, 10_000)
        ids = [i for _, batch in claimed.batches for i in batch]
        random.Random(3).shuffle(ids)  # every batch mixes many patients, as in production
        for start in range(0, len(ids), 25):
            services.deliverer.send_batch(ids[start : start + 25], claimed.token)

    def recorder() -> None:
        time.sleep(0.05)  # let the sends get going
        for patient in lost:
            time.sleep(random.uniform(0, 0.01))
            enrollments.record_loss(services.db, patient.enrollment_id, clock.now(), actor="t")

    threads = [threading.Thread(target=sender), threading.Thread(target=recorder)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    watching.engine.dispose()
    assert watching.violations == []
    assert watching.calls > 100
    # The race really happened: some patient had texts sent before, and cancelled after.
    raced = [
        {r.status for r in rows(services, p.enrollment_id)} >= {"sent", "cancelled"} for p in lost
    ]
    assert any(raced), "every reply committed before or after all the sends: no race"
    for patient in lost:
        statuses = {r.status for r in rows(services, patient.enrollment_id)}
        assert statuses <= {"sent", "cancelled", "skipped"}
