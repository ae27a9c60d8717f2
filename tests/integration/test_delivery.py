"""The outbox state machine: claim, compare-and-set, re-checks, provider outcomes, the reaper."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import CursorResult, event, select, update

from campaigns import delivery, halts
from campaigns.bootstrap import Services
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.rules.clock import MovableClock
from campaigns.rules.contacts import address_hash
from campaigns.rules.ports import (
    ConfigurationError,
    InvalidAddressError,
    OptedOutError,
    PermanentError,
    ProviderError,
    RetryableError,
    UnknownOutcomeError,
)
from campaigns.rules.vocabulary import Channel
from campaigns.sending import Outcome
from campaigns.storage.models import (
    ConsentEvent,
    Enrollment,
    Patient,
    ScheduledMessage,
    Suppression,
)
from tests.integration.helpers import enroll, enroll_with, rows

SM = ScheduledMessage


def fakes(services: Services) -> tuple[FakeSmsSender, FakeEmailSender]:
    assert isinstance(services.sms, FakeSmsSender)
    assert isinstance(services.email, FakeEmailSender)
    return services.sms, services.email


def claim(services: Services) -> delivery.Claimed:
    return delivery.claim_due(services.db, services.clock.now(), 1000, 100)


def only_sms_welcome(services: Services, **fields: str | None) -> tuple[int, delivery.Claimed]:
    enroll_with(services, {"channels": "sms", "email": "", **fields}, weeks=20)
    claimed = claim(services)
    [(channel, ids)] = claimed.batches
    assert channel is Channel.SMS and len(ids) == 1
    return ids[0], claimed


def row(services: Services, message_id: int) -> ScheduledMessage:
    with services.db.session() as session:
        found = session.get(SM, message_id)
        assert found is not None
        return found


def test_claim_takes_only_due_pending_rows_and_groups_them_by_channel(services: Services) -> None:
    for _ in range(3):
        enroll(services, weeks=10)
    claimed = delivery.claim_due(services.db, services.clock.now(), 1000, 2)
    assert claimed.count == 6  # three welcomes by SMS and email
    assert sorted(len(ids) for _, ids in claimed.batches) == [1, 1, 2, 2]
    assert {c for c, _ in claimed.batches} == {Channel.SMS, Channel.EMAIL}
    statuses = {r.status for r in rows(services) if r.step_key == "welcome"}
    assert statuses == {"claimed"}
    assert all(r.claim_token == claimed.token for r in rows(services) if r.status == "claimed")
    assert claim(services).count == 0  # nothing else is due yet


def test_sending_records_what_the_patient_received(services: Services) -> None:
    message_id, claimed = only_sms_welcome(services)
    sms, _ = fakes(services)
    outcomes = services.deliverer.send_batch([message_id], claimed.token)
    assert outcomes == {Outcome.SENT: 1}
    [sent] = sms.sent
    stored = row(services, message_id)
    assert stored.status == "sent" and stored.provider == "fake"
    assert stored.provider_id and stored.sent_at == services.clock.now()
    assert stored.body == sent.body and sent.body.startswith("Santi: thanks for joining")
    assert stored.template_ref and stored.template_ref.startswith("leg-cramps/en/welcome.sms.j2@")
    assert sent.to.startswith("+44") and sent.message_id == message_id


def test_email_carries_a_working_unsubscribe_link(services: Services) -> None:
    done = enroll(services, weeks=20, channels="email")
    claimed = claim(services)
    [(_, ids)] = claimed.batches
    services.deliverer.send_batch(ids, claimed.token)
    _, email = fakes(services)
    [sent] = email.sent
    assert sent.subject == "Welcome to Santi leg-care tips"
    assert sent.category == "leg-cramps:welcome"
    token = sent.unsubscribe_url.rsplit("/u/", 1)[1]
    assert services.links.verify("unsubscribe", token, services.clock.now()) == {
        "patient": done.patient_id,
        "message": ids[0],
    }
    assert sent.unsubscribe_url in sent.html and sent.unsubscribe_url in sent.text


def test_a_batch_delivered_twice_sends_each_message_once(services: Services) -> None:
    message_id, claimed = only_sms_welcome(services)
    services.deliverer.send_batch([message_id], claimed.token)
    again = services.deliverer.send_batch([message_id], claimed.token)
    assert again == {Outcome.NOT_CLAIMED: 1}
    assert len(fakes(services)[0].sent) == 1


def test_a_stale_claim_token_sends_nothing(services: Services) -> None:
    message_id, _ = only_sms_welcome(services)
    assert services.deliverer.send_one(message_id, "not-the-token") is Outcome.NOT_CLAIMED
    assert fakes(services)[0].sent == []
    assert row(services, message_id).status == "claimed"


def test_an_enrollment_that_stopped_after_the_claim_is_not_sent(services: Services) -> None:
    message_id, claimed = only_sms_welcome(services)
    with services.db.session() as session:  # a change that did not go through cancellation
        session.execute(update(Enrollment).values(status="stopped"))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.CANCELLED
    assert row(services, message_id).reason == "enrollment_stopped"
    assert fakes(services)[0].sent == []


def test_a_suppressed_number_is_not_sent(services: Services) -> None:
    message_id, claimed = only_sms_welcome(services, phone="+447400012345")
    with services.db.session() as session:
        session.add(
            Suppression(
                channel="sms",
                address_hash=address_hash("+447400012345"),
                reason="test",
                source="test",
                created_at=services.clock.now(),
            )
        )
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.CANCELLED
    assert row(services, message_id).reason == "suppressed"
    assert fakes(services)[0].sent == []


def test_withdrawn_consent_is_honoured_at_send_time(services: Services) -> None:
    message_id, claimed = only_sms_welcome(services)
    with services.db.session() as session:
        patient_id = session.execute(select(Enrollment.patient_id)).scalar_one()
        session.add(
            ConsentEvent(
                patient_id=patient_id,
                purpose="programme",
                channel="sms",
                granted=False,
                occurred_at=services.clock.now(),
                source="staff",
                wording_version="v1",
                actor="test",
            )
        )
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.CANCELLED
    assert row(services, message_id).reason == "no_consent"


def test_an_expired_message_is_not_sent(services: Services, clock: MovableClock) -> None:
    message_id, claimed = only_sms_welcome(services)
    clock.advance(timedelta(days=3, minutes=1))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.EXPIRED
    assert fakes(services)[0].sent == []


def test_a_closed_window_puts_the_message_back_for_the_next_opening(
    services: Services, clock: MovableClock
) -> None:
    message_id, claimed = only_sms_welcome(services)
    clock.advance(timedelta(hours=11))  # Monday 20:30 London
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.DEFERRED
    stored = row(services, message_id)
    assert stored.status == "pending" and stored.attempts == 0 and stored.claim_token is None
    assert stored.next_attempt_at == datetime(2026, 3, 3, 9, tzinfo=UTC)  # Tuesday 09:00 GMT
    assert fakes(services)[0].sent == []


def test_transient_errors_back_off_in_the_database_then_fail(
    services: Services, clock: MovableClock
) -> None:
    message_id, claimed = only_sms_welcome(services)
    sms, _ = fakes(services)
    for attempt in range(1, services.policy.max_attempts + 1):
        sms.fail_next(RetryableError("20429", "too many requests"))
        outcome = services.deliverer.send_one(message_id, claimed.token)
        stored = row(services, message_id)
        if attempt < services.policy.max_attempts:
            assert outcome is Outcome.RETRY and stored.status == "pending"
            assert stored.attempts == attempt and stored.error_code == "20429"
            wait = stored.next_attempt_at - clock.now()
            base = services.policy.retry_base_seconds * 2 ** (attempt - 1)
            assert timedelta(seconds=base * 0.8) <= wait <= timedelta(seconds=base * 1.2 + 1)
            clock.set(stored.next_attempt_at)
            claimed = claim(services)
        else:
            assert outcome is Outcome.FAILED
            assert (stored.status, stored.reason) == ("failed", "attempts_exhausted")
    assert sms.sent == []


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (PermanentError("21617", "body too long"), "failed", "PermanentError"),
        (InvalidAddressError("21211", "invalid To"), "failed", "invalid_address"),
        (OptedOutError("21610", "unsubscribed recipient"), "failed", "opted_out"),
        (UnknownOutcomeError("timeout", "read timed out"), "unknown", "provider_outcome_unknown"),
    ],
)
def test_provider_errors_are_classified(
    services: Services, error: ProviderError, status: str, reason: str
) -> None:
    message_id, claimed = only_sms_welcome(services)
    fakes(services)[0].fail_next(error)
    services.deliverer.send_one(message_id, claimed.token)
    stored = row(services, message_id)
    assert (stored.status, stored.reason) == (status, reason)
    assert stored.error_code == error.code


def test_a_configuration_error_halts_the_channel_not_the_patient(
    services: Services, clock: MovableClock
) -> None:
    message_id, claimed = only_sms_welcome(services)
    fakes(services)[0].fail_next(ConfigurationError("20003", "authentication failed"))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.HALTED
    stored = row(services, message_id)
    assert (stored.status, stored.attempts) == ("pending", 0)  # waiting, attempt not spent
    assert set(halts.halted(services.db)) == {"sms"}
    enroll(services, weeks=20, channels="email")  # email still flows
    clock.advance(timedelta(minutes=10))
    queue = RecordingQueue()
    delivery.dispatch_due(services.db, queue, clock, services.policy)
    assert {c for c, _ in queue.batches} == {Channel.EMAIL}
    assert halts.resume(services.db, Channel.SMS, clock.now(), actor="op")
    delivery.dispatch_due(services.db, queue, clock, services.policy)
    assert Channel.SMS in {c for c, _ in queue.batches}


class RecordingQueue:
    def __init__(self) -> None:
        self.batches: list[tuple[Channel, list[int]]] = []

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        self.batches.append((channel, message_ids))


def test_an_opt_out_at_the_provider_suppresses_sms_and_records_consent(services: Services) -> None:
    done = enroll(services, weeks=20, phone="+447400012399", channels="sms,email")
    claimed = claim(services)
    sms_id = next(i for c, ids in claimed.batches if c is Channel.SMS for i in ids)
    fakes(services)[0].fail_next(OptedOutError("21610", "unsubscribed recipient"))
    assert services.deliverer.send_one(sms_id, claimed.token) is Outcome.FAILED
    with services.db.session() as session:
        suppressed = session.execute(select(Suppression.channel, Suppression.source)).all()
        withdrawn = session.execute(
            select(ConsentEvent).where(ConsentEvent.granted.is_(False))
        ).scalar_one()
    assert suppressed == [("sms", "provider")]
    assert (withdrawn.channel, withdrawn.source, withdrawn.actor) == (
        "sms",
        "provider",
        "provider:fake",
    )
    states = {(r.channel, r.status) for r in rows(services, done.enrollment_id)}
    assert ("sms", "pending") not in states and ("email", "pending") in states


def test_an_invalid_number_moves_the_remaining_messages_to_email(services: Services) -> None:
    done = enroll(services, weeks=20, channels="sms", email="pat@example.com")
    claimed = claim(services)
    [(_, [message_id])] = claimed.batches
    fakes(services)[0].fail_next(InvalidAddressError("21211", "invalid To"))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.FAILED
    with services.db.session() as session:
        patient = session.get(Patient, done.patient_id)
        assert patient is not None
        assert patient.phone_invalid_reason == "fake:21211"
    after = rows(services, done.enrollment_id)
    assert not [r for r in after if r.channel == "sms" and r.status == "pending"]
    fallback = [r for r in after if r.channel == "email" and r.status == "pending"]
    assert fallback and {r.schedule_version for r in fallback} == {2}


def test_a_template_that_cannot_render_fails_the_row_without_calling_the_provider(
    services: Services,
) -> None:
    message_id, claimed = only_sms_welcome(services)
    with services.db.session() as session:
        session.execute(update(SM).where(SM.id == message_id).values(step_key="no-such-step"))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.FAILED
    assert row(services, message_id).reason == "render_error"
    assert fakes(services)[0].calls == 0


def test_concurrent_dispatchers_never_claim_the_same_row(
    make_services: object, database_url: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url, plan_horizon_days=400)  # every send a row
    now = services.clock.now()
    for _ in range(40):
        enroll(services, weeks=12)
    with services.db.session() as session:  # make every pending row due now
        moved = session.execute(
            update(SM).where(SM.status == "pending").values(next_attempt_at=now)
        )
        total = cast(CursorResult[Any], moved).rowcount  # an UPDATE's result is a cursor's
    assert total > 500
    dispatchers = 4
    claims: list[list[int]] = [[] for _ in range(dispatchers)]
    errors: list[BaseException] = []
    # The four are made to overlap, not left to the scheduler (one thread could claim it all):
    # they start their first claim together, and none claims again before all four have
    # claimed once. On PostgreSQL each first claim also waits, inside its transaction with its
    # rows locked, until all four hold theirs: SKIP LOCKED must give them disjoint rows. SQLite
    # has one writer at a time (BEGIN IMMEDIATE), so there the four queue for the write lock.
    start = threading.Barrier(dispatchers, timeout=30)
    first_round = threading.Barrier(dispatchers, timeout=30)
    holding = threading.Barrier(dispatchers, timeout=30)
    first_claim = threading.local()
    held: list[int] = []

    def hold_the_first_claim(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if getattr(first_claim, "open", False) and "SKIP LOCKED" in statement:
            first_claim.open = False
            holding.wait()  # still inside the claim's transaction: its rows stay locked
            held.append(1)

    def claim_once(index: int) -> bool:
        got = delivery.claim_due(services.db, now, 37, 10)
        claims[index].extend(i for _, ids in got.batches for i in ids)
        return bool(got.count)

    def dispatcher(index: int) -> None:
        try:
            first_claim.open = services.db.is_postgres
            start.wait()
            claim_once(index)
            first_round.wait()
            while claim_once(index):
                pass
        except BaseException as exc:
            errors.append(exc)
            for barrier in (start, first_round, holding):
                barrier.abort()  # the others stop waiting for this one

    event.listen(services.db.engine, "after_cursor_execute", hold_the_first_claim)
    try:
        threads = [threading.Thread(target=dispatcher, args=(i,)) for i in range(dispatchers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        event.remove(services.db.engine, "after_cursor_execute", hold_the_first_claim)
    assert errors == []
    everything = [i for claim_ in claims for i in claim_]
    assert len(everything) == len(set(everything)) == total  # none twice, every one once
    assert all(claims)  # every dispatcher claimed (4 x 37 rows is less than there are)
    assert len(held) == (dispatchers if services.db.is_postgres else 0)
