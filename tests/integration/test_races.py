"""A cancellation racing sends: it commits at once, and nothing starts after it commits.

The send path holds a patient's lock (FOR SHARE; on SQLite the write lock) only for the short
transactions that prepare a batch and give each call its go-ahead, never across a provider call
or a rate-limit wait. A cancellation takes the same lock FOR UPDATE, cancels every row whose
go-ahead has not committed, and lists those already with a provider (in flight). These tests
drive the two at once on both databases.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from campaigns import enrollments
from campaigns.bootstrap import Services
from campaigns.delivery import claim_due
from campaigns.ratelimit import LocalRateLimiter
from campaigns.rules.clock import MovableClock
from campaigns.rules.vocabulary import Channel
from campaigns.sending import Outcome
from campaigns.storage.models import AuditEvent, ScheduledMessage
from tests.integration.helpers import enroll, fake_sms, phone_of, rows
from tests.integration.watching import BlockingSms, HeldLimiter, WatchingSms


def audit_detail(services: Services, action: str, patient_id: int) -> dict[str, Any]:
    with services.db.session() as session:
        [detail] = session.execute(
            select(AuditEvent.detail).where(
                AuditEvent.action == action, AuditEvent.patient_id == patient_id
            )
        ).scalars()
        return dict(detail)


def all_due_now(services: Services, clock: MovableClock) -> None:
    with services.db.session() as session:
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.status == "pending")
            .values(next_attempt_at=clock.now() - timedelta(seconds=1))
        )


def test_a_loss_during_a_provider_call_commits_at_once_and_lists_the_call_in_flight(
    make_services: object, database_url: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url)
    blocking = BlockingSms()
    services.sms = blocking
    done = enroll(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches

    sender = threading.Thread(target=services.deliverer.send_one, args=(message_id, claimed.token))
    sender.start()
    assert blocking.entered.wait(10)
    loss = threading.Thread(
        target=enrollments.record_loss,
        args=(services.db, done.enrollment_id, services.clock.now()),
        kwargs={"actor": "test"},
    )
    loss.start()
    # The provider holds the call until released: the loss must not wait for it.
    loss.join(15)
    assert not loss.is_alive(), "the loss waited for a provider call"
    assert audit_detail(services, "loss_recorded", done.patient_id)["in_flight"] == [message_id]
    blocking.release.set()
    sender.join(10)
    statuses = {r.id: r.status for r in rows(services, done.enrollment_id)}
    assert statuses.pop(message_id) == "sent"  # it was already with the provider
    assert statuses and set(statuses.values()) <= {"cancelled", "skipped"}
    assert len(blocking.sent) == 1


def test_a_loss_while_calls_wait_for_their_rate_limit_slot_stops_every_one(
    make_services: object, database_url: str, clock: MovableClock
) -> None:
    """Calls waiting for a slot have no go-ahead yet: a loss that commits meanwhile (without
    waiting for them) stops them all, however many were queued."""
    assert callable(make_services)
    services: Services = make_services(database_url, send_concurrency=50, plan_horizon_days=400)
    watching = WatchingSms(database_url)
    services.sms = watching
    patients = [enroll(services, weeks=12, channels="sms", email="") for _ in range(4)]
    all_due_now(services, clock)
    claimed = claim_due(services.db, clock.now(), 40, 40)
    [(_, ids)] = claimed.batches
    held = HeldLimiter(expected=len(ids))
    services.deliverer.limiters[Channel.SMS] = held
    sender = threading.Thread(target=services.deliverer.send_batch, args=(ids, claimed.token))
    sender.start()
    assert held.all_waiting.wait(15), "the calls never reached the rate limit"
    for patient in patients:
        finished = threading.Thread(
            target=enrollments.record_loss,
            args=(services.db, patient.enrollment_id, clock.now()),
            kwargs={"actor": "test"},
        )
        finished.start()
        finished.join(15)
        assert not finished.is_alive(), "a loss waited for calls queued on the rate limit"
        assert audit_detail(services, "loss_recorded", patient.patient_id)["in_flight"] == []
    held.release.set()
    sender.join(30)
    watching.close()
    assert watching.calls == 0 and watching.violations == []
    for patient in patients:
        statuses = {r.status for r in rows(services, patient.enrollment_id)}
        assert statuses <= {"cancelled", "skipped"}, statuses


def test_a_claimed_message_is_not_sent_once_a_loss_is_recorded(services: Services) -> None:
    done = enroll(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches
    enrollments.record_loss(services.db, done.enrollment_id, services.clock.now(), actor="t")
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.NOT_CLAIMED
    assert fake_sms(services).sent == []


def test_a_pause_between_claim_and_send_is_honoured(services: Services) -> None:
    done = enroll(services, weeks=20, channels="sms", email="")
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches
    enrollments.pause(services.db, done.enrollment_id, services.clock.now(), actor="t")
    assert services.deliverer.send_batch([message_id], claimed.token) == {Outcome.NOT_CLAIMED: 1}


def test_random_cancellations_racing_200_rate_limited_calls_never_let_a_text_through(
    make_services: object, database_url: str, clock: MovableClock
) -> None:
    """Losses, pauses and stops at random moments while 200 calls at a time wait for a shared
    rate limit: a provider that checks the database on every call finds no call whose
    go-ahead came after a committed cancellation."""
    assert callable(make_services)
    services: Services = make_services(database_url, send_concurrency=200, plan_horizon_days=400)
    patients = [enroll(services, weeks=12, channels="sms", email="") for _ in range(40)]
    chosen = random.Random(7).sample(patients, 24)
    by_phone = {phone_of(services, p.patient_id): p for p in chosen}
    # The first call to a chosen patient stays with the provider until that patient's
    # cancellation has committed. So the cancellations start while sends are under way (the
    # held call's batch cannot finish, the batches after it cannot start), and that patient
    # has a text with the provider and texts still to cancel: the race happens, whatever the
    # machine's load.
    watching = WatchingSms(database_url, hold=lambda message: message.to in by_phone)
    services.sms = watching
    services.deliverer.limiters[Channel.SMS] = LocalRateLimiter(400)
    all_due_now(services, clock)
    rng = random.Random(3)
    waits: list[float] = []

    def sender() -> None:
        claimed = claim_due(services.db, clock.now(), 10_000, 10_000)
        ids = [i for _, batch in claimed.batches for i in batch]
        assert len(ids) > 400  # three batches: the held call's and two that wait for it
        rng.shuffle(ids)  # every batch mixes many patients, as in production
        for start in range(0, len(ids), 200):
            services.deliverer.send_batch(ids[start : start + 200], claimed.token)

    def canceller() -> None:
        assert watching.held.wait(60), "no call to a chosen patient reached the provider"
        assert watching.held_message is not None
        first = by_phone[watching.held_message.to]
        for number, patient in enumerate([first, *(p for p in chosen if p is not first)]):
            if number:  # the rest at random moments while the sends go on
                time.sleep(random.uniform(0, 0.03))
            started = time.monotonic()
            if number % 3 == 0:
                enrollments.record_loss(services.db, patient.enrollment_id, clock.now(), actor="t")
            elif number % 3 == 1:
                enrollments.pause(services.db, patient.enrollment_id, clock.now(), actor="t")
            else:
                enrollments.stop(
                    services.db, patient.enrollment_id, clock.now(), actor="t", reason="staff"
                )
            waits.append(time.monotonic() - started)
            watching.resume.set()  # after the first: the held call goes on

    threads = [threading.Thread(target=sender), threading.Thread(target=canceller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    watching.close()
    assert watching.violations == []
    assert watching.calls > 100
    # The race really happened: the first patient cancelled had a text with the provider when
    # the cancellation committed (sent), and texts it stopped (cancelled).
    assert watching.held_message is not None
    first = by_phone[watching.held_message.to]
    assert {r.status for r in rows(services, first.enrollment_id)} >= {"sent", "cancelled"}
    for patient in chosen:
        statuses = {r.status for r in rows(services, patient.enrollment_id)}
        assert statuses <= {"sent", "cancelled", "skipped"}, statuses
    assert len(waits) == len(chosen)


@pytest.mark.postgres
def test_a_cancellation_waits_only_for_a_go_ahead_not_for_calls(
    make_services: object, clean_postgres_url: str, clock: MovableClock
) -> None:
    """While 200 calls are held inside the provider, a patient's loss commits without them."""
    assert callable(make_services)
    services: Services = make_services(
        clean_postgres_url, send_concurrency=200, plan_horizon_days=400
    )
    blocking = BlockingSms()
    services.sms = blocking
    patients = [enroll(services, weeks=12, channels="sms", email="") for _ in range(10)]
    all_due_now(services, clock)
    claimed = claim_due(services.db, clock.now(), 200, 200)
    [(_, ids)] = claimed.batches
    sender = threading.Thread(target=services.deliverer.send_batch, args=(ids, claimed.token))
    sender.start()
    assert blocking.entered.wait(10)
    loss = threading.Thread(
        target=enrollments.record_loss,
        args=(services.db, patients[0].enrollment_id, clock.now()),
        kwargs={"actor": "test"},
    )
    loss.start()
    loss.join(15)
    assert not loss.is_alive(), "the loss waited for calls inside the provider"
    blocking.release.set()
    sender.join(30)
    in_flight = audit_detail(services, "loss_recorded", patients[0].patient_id)["in_flight"]
    sent = {m.message_id for m in blocking.sent}
    mine = {r.id for r in rows(services, patients[0].enrollment_id)}
    # What went to the patient after the loss is exactly what the loss found in flight.
    assert sent & mine == set(in_flight)
