"""Recovery: lost claims, dead workers, lost answers and dead letters, on both databases.

Nothing is lost: a claim no worker took, or a batch whose worker stopped renewing its lease,
comes back within the claim timeout or lease. Nothing is sent twice on a guess: a send whose
answer was lost is settled by the provider's own records (found: sent; not found: sent
again), and what the provider cannot say goes to staff, never back into the queue by itself.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import CursorResult, create_engine, func, select, text, update

from campaigns import delivery, reconciling
from campaigns.bootstrap import Services
from campaigns.providers.fake import FakeSmsSender
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import StateError
from campaigns.rules.ports import (
    OutgoingSms,
    PermanentError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)
from campaigns.rules.send_rules import Outcome, Verdict
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.storage import outbox
from campaigns.storage.models import Alert, AuditEvent, ScheduledMessage, SendLease
from tests.integration.helpers import enroll, fake_sms

SM = ScheduledMessage


def sms_welcomes(services: Services, patients: int = 1) -> delivery.Claimed:
    for _ in range(patients):
        enroll(services, weeks=20, channels="sms", email="")
    claimed = delivery.claim_due(services.db, services.clock.now(), 1000, 1000)
    assert claimed.count == patients
    return claimed


def only_ids(claimed: delivery.Claimed) -> list[int]:
    [(_, ids)] = claimed.batches
    return ids


def row(services: Services, message_id: int) -> ScheduledMessage:
    with services.db.session() as session:
        found = session.get(SM, message_id)
        assert found is not None
        return found


def reconcile(services: Services) -> dict[str, int]:
    return dict(
        reconciling.reconcile(
            services.db, services.sms, services.email, services.clock.now(), services.policy
        )
    )


def send_due(services: Services) -> Any:
    claimed = delivery.claim_due(services.db, services.clock.now(), 1000, 1000)
    outcomes: Any = {}
    for _, ids in claimed.batches:
        for outcome, count in services.deliverer.send_batch(ids, claimed.token).items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    return outcomes


def test_a_claim_no_worker_took_goes_back_after_the_claim_timeout(
    services: Services, clock: MovableClock
) -> None:
    [message_id] = only_ids(sms_welcomes(services))
    clock.advance(timedelta(seconds=services.policy.claim_timeout_seconds - 1))
    assert not delivery.reap(services.db, clock.now(), services.policy)
    clock.advance(timedelta(seconds=2))
    assert delivery.reap(services.db, clock.now(), services.policy).claims == 1
    stored = row(services, message_id)
    assert (stored.status, stored.claim_token) == ("pending", None)
    assert send_due(services) == {Outcome.SENT: 1}


def start_by_hand(services: Services, claimed: delivery.Claimed, token: str) -> dict[int, int]:
    """What a worker does first; then it "dies" (nothing renews the lease)."""
    with services.db.session() as session:
        return outbox.start_batch(
            session.connection(),
            only_ids(claimed),
            claimed.token,
            token,
            "test:1",
            services.clock.now(),
        )


def go_ahead_by_hand(services: Services, token: str, message_id: int) -> set[int]:
    with services.db.session() as session:
        return outbox.allow_calls(
            session.connection(),
            token,
            [outbox.Content(message_id, "Santi: hello", None, "t@1")],
            services.clock.now(),
        )


def test_a_batch_whose_worker_died_is_taken_back_when_its_lease_lapses(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services, patients=2)
    started, unstarted = only_ids(claimed)
    assert set(start_by_hand(services, claimed, "batch-1")) == {started, unstarted}
    assert go_ahead_by_hand(services, "batch-1", started) == {started}
    lease = services.policy.send_lease_seconds
    clock.advance(timedelta(seconds=lease - 1))
    assert not delivery.reap(services.db, clock.now(), services.policy)
    clock.advance(timedelta(seconds=2))
    reaped = delivery.reap(services.db, clock.now(), services.policy)
    assert (reaped.released, reaped.unknown) == (1, 1)
    never = row(services, unstarted)
    assert (never.status, never.attempts, never.claim_token) == ("pending", 0, None)
    maybe = row(services, started)
    assert (maybe.status, maybe.reason) == ("unknown", "worker_lost")
    assert maybe.reconcile_at is not None and maybe.call_started_at is not None
    with services.db.session() as session:
        assert session.execute(select(func.count()).select_from(SendLease)).scalar_one() == 0
    # The one that never started is simply sent; the other waits for its provider's answer.
    assert send_due(services) == {Outcome.SENT: 1}
    assert [m.message_id for m in fake_sms(services).sent] == [unstarted]


def test_a_renewed_lease_keeps_a_slow_batch_its_rows(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services)
    start_by_hand(services, claimed, "batch-1")
    for _ in range(4):
        clock.advance(timedelta(seconds=services.policy.send_lease_seconds - 1))
        with services.db.session() as session:
            outbox.renew_leases(session.connection(), ["batch-1"], clock.now())
        assert not delivery.reap(services.db, clock.now(), services.policy)
    assert row(services, only_ids(claimed)[0]).status == "sending"


def test_a_worker_cut_off_from_its_rows_starts_no_call_but_its_late_record_lands(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services, patients=2)
    started, unstarted = only_ids(claimed)
    start_by_hand(services, claimed, "batch-1")
    go_ahead_by_hand(services, "batch-1", started)
    clock.advance(timedelta(seconds=services.policy.send_lease_seconds + 1))
    delivery.reap(services.db, clock.now(), services.policy)
    # The worker comes back: its rows are not its own any more...
    assert go_ahead_by_hand(services, "batch-1", unstarted) == set()
    # ...but what its call to the provider did is still recorded, not lost.
    facts_row = row(services, started)
    verdict = Verdict(
        Outcome.SENT,
        MessageStatus.SENT,
        facts_row.attempts,
        provider="fake",
        provider_id="FAKE-late",
        sent_at=clock.now(),
    )
    with services.db.session() as session:
        outbox.record_calls(session.connection(), "batch-1", [(started, verdict)], clock.now())
    late = row(services, started)
    assert (late.status, late.provider_id, late.claim_token) == ("sent", "FAKE-late", None)
    assert reconcile(services) == {}  # nothing left to ask about


class AcceptedButLost(FakeSmsSender):
    """Accepts the message, then the answer never arrives (a read timeout)."""

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        super().send_sms(message)
        raise UnknownOutcomeError("timeout", "no answer in time")


def test_an_answer_lost_after_the_provider_accepted_is_found_and_never_sent_again(
    make_services: object, database_url: str, clock: MovableClock
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url)
    services.sms = AcceptedButLost()
    claimed = sms_welcomes(services)
    [message_id] = only_ids(claimed)
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.UNKNOWN
    stored = row(services, message_id)
    assert stored.status == "unknown" and stored.reason == "provider_outcome_unknown"
    assert stored.body and stored.call_started_at is not None  # what was sent, kept for matching
    assert reconcile(services) == {}  # not yet: the provider's records need time
    clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
    assert reconcile(services) == {"reconciled_sent": 1}
    settled = row(services, message_id)
    receipt = services.sms._receipts[message_id]
    assert (settled.status, settled.provider_id) == ("sent", receipt.provider_id)
    assert send_due(services) == {}
    assert len(fake_sms(services).sent) == 1
    with services.db.session() as session:
        [evidence] = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "send_reconciled")
        ).scalars()
    assert evidence["became"] == "sent" and evidence["evidence"]


def test_a_send_that_never_arrived_is_sent_again_once_the_provider_says_so(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services)
    [message_id] = only_ids(claimed)
    fake_sms(services).fail_next(UnknownOutcomeError("connection_lost", "mid-request"))
    assert services.deliverer.send_one(message_id, claimed.token) is Outcome.UNKNOWN
    clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
    assert reconcile(services) == {"reconciled_not_sent": 1}
    stored = row(services, message_id)
    assert (stored.status, stored.call_started_at) == ("pending", None)
    assert send_due(services) == {Outcome.SENT: 1}
    assert [m.message_id for m in fake_sms(services).sent] == [message_id]
    assert row(services, message_id).attempts == 2


def test_without_lookups_an_unknown_send_waits_for_a_callback_then_goes_to_staff(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services)
    [message_id] = only_ids(claimed)
    sms = fake_sms(services)
    sms.lookups_supported = False
    sms.fail_next(UnknownOutcomeError("timeout", "no answer"))
    services.deliverer.send_one(message_id, claimed.token)
    clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
    assert reconcile(services) == {"awaiting_callback": 1}
    assert reconcile(services) == {}  # not asked again before the deadline
    with pytest.raises(StateError, match="still being reconciled"):
        delivery.requeue(services.db, [message_id], clock.now(), actor="op", unknown=True)
    clock.advance(timedelta(seconds=services.policy.review_after_seconds))
    assert reconcile(services) == {"needs_review": 1}
    stored = row(services, message_id)
    assert (stored.status, stored.reason, stored.reconcile_at) == ("unknown", "needs_review", None)
    with services.db.session() as session:
        [alert] = session.execute(select(Alert)).scalars()
    assert (alert.kind, alert.severity) == ("sends_unconfirmed", "review")
    assert alert.detail["messages"] == [message_id]
    with pytest.raises(StateError, match="it may have been sent"):
        delivery.requeue(services.db, [message_id], clock.now(), actor="op")
    assert delivery.requeue(services.db, [message_id], clock.now(), actor="op", unknown=True) == [
        message_id
    ]
    assert row(services, message_id).status == "pending"


def test_a_lookup_that_fails_is_asked_again_later(services: Services, clock: MovableClock) -> None:
    claimed = sms_welcomes(services)
    [message_id] = only_ids(claimed)
    sms = fake_sms(services)
    sms.fail_next(UnknownOutcomeError("timeout", "no answer"))
    services.deliverer.send_one(message_id, claimed.token)
    clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
    sms.fail_lookup_next(RetryableError("503", "provider down"))
    assert reconcile(services) == {"lookup_failed": 1}
    assert row(services, message_id).status == "unknown"
    clock.advance(timedelta(seconds=max(30, services.policy.reconcile_after_seconds)))
    assert reconcile(services) == {"reconciled_not_sent": 1}


def test_a_callback_that_settles_an_unknown_send_first_is_left_alone(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services)
    [message_id] = only_ids(claimed)
    fake_sms(services).fail_next(UnknownOutcomeError("timeout", "no answer"))
    services.deliverer.send_one(message_id, claimed.token)
    clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
    rows_ = reconciling.due(services.db, clock.now(), 10)
    with services.db.session() as session:  # the status callback lands meanwhile
        session.execute(update(SM).where(SM.id == message_id).values(status="delivered"))
    resolutions = [reconciling.settle(r, None, "x", clock.now(), services.policy) for r in rows_]
    assert reconciling.apply(services.db, rows_, resolutions, clock.now()) == []
    assert row(services, message_id).status == "delivered"


def test_requeue_takes_failed_messages_all_or_none_and_audits_it(
    services: Services, clock: MovableClock
) -> None:
    claimed = sms_welcomes(services, patients=2)
    failed, unknown = only_ids(claimed)
    sms = fake_sms(services)
    sms.fail_next(PermanentError("21617", "body too long"))
    sms.fail_next(UnknownOutcomeError("timeout", "no answer"))
    services.deliverer.send_batch([failed, unknown], claimed.token)
    assert {row(services, failed).status, row(services, unknown).status} == {"failed", "unknown"}
    failed, unknown = sorted([failed, unknown], key=lambda i: row(services, i).status != "failed")
    for ids, message in (
        ([failed, unknown], f"{unknown} is unknown"),
        ([failed, 99999], "99999 does not exist"),
    ):
        with pytest.raises(StateError, match=message):
            delivery.requeue(services.db, ids, clock.now(), actor="op")
        assert row(services, failed).status == "failed"  # nothing was written
    assert delivery.failed_ids(services.db) == [failed]
    assert delivery.requeue(services.db, [failed], clock.now(), actor="op") == [failed]
    stored = row(services, failed)
    assert (stored.status, stored.attempts, stored.reason) == ("pending", 0, "requeued")
    with pytest.raises(StateError, match="is pending"):
        delivery.requeue(services.db, [failed], clock.now(), actor="op")
    # Forced, an unknown send goes back even before its provider was asked.
    assert delivery.requeue(services.db, [unknown], clock.now(), actor="op", force=True) == [
        unknown
    ]
    with services.db.session() as session:
        details = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "requeued").order_by(AuditEvent.id)
        ).scalars()
        assert [d["forced"] for d in details] == [False, True]


def test_failed_ids_page_through_every_dead_letter(services: Services) -> None:
    claimed = sms_welcomes(services, patients=5)
    sms = fake_sms(services)
    for _ in range(5):
        sms.fail_next(PermanentError("21617", "body too long"))
    services.deliverer.send_batch(only_ids(claimed), claimed.token)
    pages, after = [], 0
    while page := delivery.failed_ids(services.db, after, limit=2):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(i for p in pages for i in p) == sorted(only_ids(claimed))


class RefusingQueue:
    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        raise ConnectionError("broker down")


def test_a_batch_the_broker_refused_goes_straight_back_to_pending(
    services: Services, clock: MovableClock
) -> None:
    enroll(services, weeks=20, channels="sms", email="")
    assert delivery.dispatch_due(services.db, RefusingQueue(), clock, services.policy) == 0
    with services.db.session() as session:
        statuses = session.execute(select(SM.status).where(SM.next_attempt_at <= clock.now()))
        assert set(statuses.scalars()) == {"pending"}


class CountingQueue:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        self.batches.append(message_ids)


def test_a_rate_limited_channel_is_claimed_only_as_far_as_its_workers_can_send(
    make_services: object, database_url: str, clock: MovableClock
) -> None:
    assert callable(make_services)
    services: Services = make_services(
        database_url, sms_rate=0.5, send_batch_size=5, claim_timeout_seconds=10
    )
    for _ in range(12):
        enroll(services, weeks=20, channels="sms", email="")
    queue = CountingQueue()
    assert services.policy.claim_cap(Channel.SMS) == 5
    assert delivery.dispatch_due(services.db, queue, clock, services.policy) == 5
    assert delivery.dispatch_due(services.db, queue, clock, services.policy) == 0
    clock.advance(timedelta(seconds=11))  # the claims time out: back, then claimed again
    delivery.reap(services.db, clock.now(), services.policy)
    assert delivery.dispatch_due(services.db, queue, clock, services.policy) == 5


@pytest.mark.postgres
def test_database_connections_killed_mid_batch_lose_nothing_and_send_nothing_twice(
    make_services: object, clean_postgres_url: str, clock: MovableClock
) -> None:
    """pg_terminate_backend on every connection of the service while calls are in flight:
    each message ends sent exactly once, or back in the queue and then sent, never lost."""
    assert callable(make_services)
    services: Services = make_services(
        clean_postgres_url, send_concurrency=20, plan_horizon_days=400
    )
    killer = create_engine(
        clean_postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
        connect_args={"application_name": "killer"},
    )
    kills = threading.Semaphore(3)

    class KillingSms(FakeSmsSender):
        def send_sms(self, message: OutgoingSms) -> SendReceipt:
            receipt = super().send_sms(message)
            if message.message_id % 7 == 0 and kills.acquire(blocking=False):
                with killer.connect() as connection:
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name <> 'killer'"
                        )
                    )
            return receipt

    services.sms = KillingSms()
    for _ in range(10):
        enroll(services, weeks=12, channels="sms", email="")
    with services.db.session() as session:
        moved = session.execute(
            update(SM)
            .where(SM.status == "pending")
            .values(next_attempt_at=clock.now() - timedelta(seconds=1))
        )
        total = cast(CursorResult[Any], moved).rowcount  # an UPDATE's result is a cursor's
    for _ in range(30):  # dispatch, recover and reconcile until everything has settled
        send_due(services)
        clock.advance(timedelta(seconds=services.policy.send_lease_seconds + 1))
        delivery.reap(services.db, clock.now(), services.policy)
        clock.advance(timedelta(seconds=services.policy.reconcile_after_seconds))
        reconcile(services)
        with services.db.session() as session:
            left = session.execute(
                select(func.count()).where(
                    SM.status.in_(["pending", "claimed", "sending", "unknown"]),
                    SM.next_attempt_at <= clock.now(),
                )
            ).scalar_one()
        if not left:
            break
    killer.dispose()
    sent = [m.message_id for m in services.sms.sent]
    assert len(sent) == len(set(sent)), "a message was sent twice"
    with services.db.session() as session:
        statuses = dict(session.execute(select(SM.status, func.count()).group_by(SM.status)).all())
    assert statuses.get(MessageStatus.SENT, 0) == len(sent) == total
