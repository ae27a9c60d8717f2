"""A patient's STOP (or news of a loss) racing sends: it commits at once, and nothing starts
after it commits.

The reply's transaction takes the patient's row lock FOR UPDATE, which the send path holds only
for its short go-ahead transactions, never across a provider call. So the reply never waits for
a provider, and every call whose go-ahead came later sees it and does not start.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import update

from campaigns.answering import Answer
from campaigns.bootstrap import Services
from campaigns.delivery import claim_due
from campaigns.ratelimit import LocalRateLimiter
from campaigns.rules.clock import MovableClock
from campaigns.rules.replies import Inbound
from campaigns.rules.vocabulary import Channel
from campaigns.storage.models import ScheduledMessage
from tests.integration.helpers import enroll, phone_of, rows
from tests.integration.test_races import audit_detail
from tests.integration.watching import BlockingSms, WatchingSms

_sids = count(1)


def reply(services: Services, phone: str, body: str) -> Answer:
    message = Inbound(f"SMrace{next(_sids):026d}", phone, body)
    return services.answerer.handle(message, services.clock.now())


@pytest.mark.parametrize(
    ("body", "action"), [("STOP", "opted_out"), ("we lost the baby", "loss_hold")]
)
def test_a_reply_during_a_send_commits_at_once_and_stops_the_rest(
    make_services: object, database_url: str, body: str, action: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url, plan_horizon_days=400)
    blocking = BlockingSms()
    services.sms = blocking
    done = enroll(services, weeks=20, channels="sms", email="")
    phone = phone_of(services, done.patient_id)
    claimed = claim_due(services.db, services.clock.now(), 100, 100)
    [(_, [message_id])] = claimed.batches
    sender = threading.Thread(target=services.deliverer.send_one, args=(message_id, claimed.token))
    sender.start()
    assert blocking.entered.wait(10)
    answers: list[Answer] = []
    replier = threading.Thread(target=lambda: answers.append(reply(services, phone, body)))
    replier.start()
    replier.join(15)  # the provider holds its call until released: the reply must not wait
    assert not replier.is_alive(), "the reply waited for a provider call"
    assert answers and answers[0].replies
    assert audit_detail(services, action, done.patient_id)["in_flight"] == [message_id]
    blocking.release.set()
    sender.join(10)
    statuses = {r.id: r.status for r in rows(services, done.enrollment_id)}
    assert statuses.pop(message_id) == "sent"  # it was already with the provider
    assert statuses and set(statuses.values()) <= {"cancelled", "skipped"}
    assert len(blocking.sent) == 1


def test_random_stops_and_losses_racing_200_rate_limited_calls_never_let_a_text_through(
    make_services: object, database_url: str, clock: MovableClock
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url, send_concurrency=200, plan_horizon_days=400)
    patients = [enroll(services, weeks=12, channels="sms", email="") for _ in range(40)]
    with services.db.session() as session:  # every planned message is due at once
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.status == "pending")
            .values(next_attempt_at=clock.now() - timedelta(seconds=1))
        )
    chosen = random.Random(11).sample(patients, 20)
    by_phone = {phone_of(services, p.patient_id): p for p in chosen}
    # The first call to a chosen patient stays with the provider until that patient's reply
    # has committed: the replies start while sends are under way, and that patient has a text
    # with the provider and texts still to stop (as in test_races).
    watching = WatchingSms(database_url, hold=lambda message: message.to in by_phone)
    services.sms = watching
    services.deliverer.limiters[Channel.SMS] = LocalRateLimiter(400)

    def sender() -> None:
        claimed = claim_due(services.db, clock.now(), 10_000, 10_000)
        ids = [i for _, batch in claimed.batches for i in batch]
        assert len(ids) > 400  # three batches: the held call's and two that wait for it
        random.Random(5).shuffle(ids)  # every batch mixes many patients, as in production
        for start in range(0, len(ids), 200):
            services.deliverer.send_batch(ids[start : start + 200], claimed.token)

    def replier() -> None:
        assert watching.held.wait(60), "no call to a chosen patient reached the provider"
        assert watching.held_message is not None
        first = by_phone[watching.held_message.to]
        for number, patient in enumerate([first, *(p for p in chosen if p is not first)]):
            if number:  # the rest at random moments while the sends go on
                time.sleep(random.uniform(0, 0.03))
            body = "STOP" if number % 2 else "I had a miscarriage"
            reply(services, phone_of(services, patient.patient_id), body)
            watching.resume.set()  # after the first: the held call goes on

    threads = [threading.Thread(target=sender), threading.Thread(target=replier)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    watching.close()
    assert watching.violations == []
    assert watching.calls > 100
    # The race really happened: the first patient who replied had a text with the provider
    # when the reply committed (sent), and texts it stopped (cancelled).
    assert watching.held_message is not None
    first = by_phone[watching.held_message.to]
    assert {r.status for r in rows(services, first.enrollment_id)} >= {"sent", "cancelled"}
    for patient in chosen:
        statuses = {r.status for r in rows(services, patient.enrollment_id)}
        assert statuses <= {"sent", "cancelled", "skipped"}, statuses
