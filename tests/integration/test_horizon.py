"""The rolling outbox: only sends due soon are rows; extend_plans writes the rest in time."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from campaigns import enrollments
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.runtime import InlineQueue, tick
from campaigns.scheduling import extend_plans
from tests.integration.helpers import enroll, enrollment, fake_sms, rows


def test_only_sends_inside_the_horizon_are_rows(services: Services) -> None:
    done = enroll(services, weeks=10)
    record = enrollment(services, done.enrollment_id)
    assert record.planned_until == services.clock.now() + timedelta(days=14)
    stored = rows(services, done.enrollment_id)
    assert stored and all(r.due_at < record.planned_until for r in stored)
    later = [p for p in done.planned if p.status == "pending" and p.due_at >= record.planned_until]
    assert len(later) > 20


def test_extension_writes_the_next_sends_once_and_only_when_needed(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=10)
    assert extend_plans(services.db, services.planner, clock.now()).enrollments == 0  # 14 days left
    clock.advance(timedelta(days=8))  # 6 days left: under half the horizon
    assert extend_plans(services.db, services.planner, clock.now()).enrollments == 1
    assert (
        extend_plans(services.db, services.planner, clock.now()).enrollments == 0
    )  # nothing twice
    record = enrollment(services, done.enrollment_id)
    assert record.planned_until == clock.now() + timedelta(days=14)
    keys = [(r.step_key, r.channel) for r in rows(services, done.enrollment_id)]
    assert len(keys) == len(set(keys))
    expected = {
        (p.step.key, p.channel.value)
        for p in done.planned
        if p.status == "pending" and p.due_at < record.planned_until
    }
    assert set(keys) == expected  # the same slots as planned at enrolment


def test_paused_or_ended_plans_are_not_extended(services: Services, clock: MovableClock) -> None:
    paused = enroll(services, weeks=10)
    lost = enroll(services, weeks=10)
    enrollments.pause(services.db, paused.enrollment_id, clock.now(), actor="t")
    enrollments.record_loss(services.db, lost.enrollment_id, clock.now(), actor="t")
    clock.advance(timedelta(days=20))
    assert extend_plans(services.db, services.planner, clock.now()).enrollments == 0
    for done in (paused, lost):
        assert not [r for r in rows(services, done.enrollment_id) if r.status == "pending"]


@pytest.mark.parametrize("weeks", [8, 33])  # early, and late with catch-ups
def test_every_step_goes_exactly_once_across_the_whole_programme(
    services: Services, clock: MovableClock, weeks: int
) -> None:
    done = enroll(services, weeks=weeks, consent="programme,marketing_sms,marketing_email")
    queue = InlineQueue(services)
    for _ in range(4 * 7 * 33):  # every 6 hours until 41 weeks
        extend_plans(services.db, services.planner, clock.now())
        tick(services, queue)
        clock.advance(timedelta(hours=6))
        if enrollment(services, done.enrollment_id).planned_until is None and not [
            r for r in rows(services, done.enrollment_id) if r.status == "pending"
        ]:
            break
    sent = Counter(
        (r.step_key, r.channel) for r in rows(services, done.enrollment_id) if r.status == "sent"
    )
    expected = {(p.step.key, p.channel.value) for p in done.planned if p.status == "pending"}
    assert set(sent) == expected and set(sent.values()) == {1}
    assert enrollment(services, done.enrollment_id).planned_until is None  # all written
    assert len(fake_sms(services).sent) == sum(1 for _, c in expected if c == "sms")
