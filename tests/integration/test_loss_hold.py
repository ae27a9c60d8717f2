"""A loss told in a text holds the patient's messages; staff confirm it or clear the hold, while
a batch of her texts is with the provider. Nothing is ended by the text, nothing goes out after
the hold commits (bar the call already under way), and nothing is repeated after a clear.

Deterministic: the provider holds its call until the test releases it (no sleeps), and every
step below must commit while it is held, or the reply or the staff decision waited for a
provider.
"""

from __future__ import annotations

import threading
from collections import Counter
from itertools import count

import pytest
from sqlalchemy import select

from campaigns import loss_review
from campaigns.bootstrap import Services
from campaigns.delivery import claim_due
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import StateError
from campaigns.rules.replies import Inbound
from campaigns.storage.models import Alert
from tests.integration.helpers import enroll, enrollment, phone_of, rows
from tests.integration.test_races import all_due_now, audit_detail
from tests.integration.watching import BlockingSms

_sids = count(1)


def reply(services: Services, phone: str, body: str) -> tuple[str, ...]:
    message = Inbound(f"SMhold{next(_sids):026d}", phone, body)
    return services.answerer.handle(message, services.clock.now()).replies


def loss_alert(services: Services, patient_id: int) -> Alert:
    with services.db.session() as session:
        return session.execute(
            select(Alert).where(Alert.patient_id == patient_id, Alert.kind == "loss")
        ).scalar_one()


@pytest.mark.parametrize("decision", ["confirm", "clear"])
def test_a_loss_hold_and_the_staff_decision_race_an_in_flight_batch(
    make_services: object, database_url: str, clock: MovableClock, decision: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url, plan_horizon_days=400, send_concurrency=1)
    blocking = BlockingSms()
    services.sms = blocking
    done = enroll(services, weeks=12, channels="sms", email="")
    phone = phone_of(services, done.patient_id)
    all_due_now(services, clock)
    claimed = claim_due(services.db, clock.now(), 100, 100)
    ids = [i for _, batch in claimed.batches for i in batch]
    assert len(ids) >= 3, "the batch should hold several of her texts"
    sender = threading.Thread(target=services.deliverer.send_batch, args=(ids, claimed.token))
    sender.start()
    assert blocking.entered.wait(10)  # the first call is with the provider, the rest wait

    answers = reply(services, phone, "the scan showed there was no heartbeat")
    assert answers and "so sorry" in answers[0]
    held = enrollment(services, done.enrollment_id)
    assert (held.status, held.held_from) == ("loss_hold", "active")
    [in_flight] = audit_detail(services, "loss_hold", done.patient_id)["in_flight"]
    alert = loss_alert(services, done.patient_id)
    assert (alert.severity, alert.email_due) == ("amber", True)

    if decision == "confirm":
        loss_review.confirm(services.db, alert.id, clock.now(), actor="staff")
    else:
        loss_review.clear(services.db, services.planner, alert.id, clock.now(), actor="staff")
    assert sender.is_alive(), "the staff decision must not wait for the provider call"
    blocking.release.set()
    sender.join(15)
    assert not sender.is_alive()

    # Only the call already under way went out; no other text of the batch started after it.
    assert [m.message_id for m in blocking.sent] == [in_flight]
    statuses = {r.id: r.status for r in rows(services, done.enrollment_id)}
    assert statuses[in_flight] == "sent"
    assert all(statuses[i] == "cancelled" for i in ids if i != in_flight)
    sent_steps = Counter(
        r.step_key for r in rows(services, done.enrollment_id) if r.status == "sent"
    )
    assert set(sent_steps.values()) == {1}
    after = enrollment(services, done.enrollment_id)
    pending = {r.step_key for r in rows(services, done.enrollment_id) if r.status == "pending"}
    if decision == "confirm":
        assert (after.status, after.held_from) == ("ended_loss", None)
        assert pending == set()
        assert audit_detail(services, "loss_recorded", done.patient_id)["enrollments"] == [
            done.enrollment_id
        ]
    else:
        assert (after.status, after.held_from) == ("active", None)
        assert pending, "clearing the hold plans her messages again"
        assert not pending & set(sent_steps), "a step already sent is never planned again"
        assert after.schedule_version > held.schedule_version
        cleared = audit_detail(services, "loss_hold_cleared", done.patient_id)
        assert cleared["enrollments"] == [done.enrollment_id]
    assert loss_alert(services, done.patient_id).acknowledged_by == "staff"


def test_a_decided_loss_alert_cannot_be_decided_twice(
    make_services: object, database_url: str
) -> None:
    assert callable(make_services)
    services: Services = make_services(database_url)
    done = enroll(services, weeks=20)
    reply(services, phone_of(services, done.patient_id), "I had a miscarriage yesterday")
    alert = loss_alert(services, done.patient_id)
    now = services.clock.now()
    loss_review.clear(services.db, services.planner, alert.id, now, actor="staff")
    with pytest.raises(StateError, match="already acknowledged"):
        loss_review.confirm(services.db, alert.id, now, actor="staff")
    assert enrollment(services, done.enrollment_id).status == "active"
