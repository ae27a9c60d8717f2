"""EDD changes, births, losses, pauses: what is cancelled, planned, and never repeated."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from campaigns import enrollments, housekeeping
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.vocabulary import EddSource
from campaigns.runtime import InlineQueue, tick
from campaigns.scheduling import extend_plans
from campaigns.storage.models import AuditEvent
from tests.integration.helpers import enroll, enrollment, rows


def send_due(services: Services) -> int:
    """What beat does: extend plans whose written horizon runs short, then dispatch."""
    extend_plans(services.db, services.planner, services.clock.now())
    return tick(services, InlineQueue(services))


def live(services: Services, enrollment_id: int) -> dict[tuple[str, str], str]:
    return {
        (r.step_key, r.channel): r.status
        for r in rows(services, enrollment_id)
        if r.status not in ("cancelled", "skipped", "expired")
    }


def test_edd_change_cancels_the_old_plan_and_never_repeats_a_sent_step(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=13, days=6)
    assert send_due(services) == 2  # welcome by SMS and email
    clock.advance(timedelta(days=1, hours=1))  # Tuesday 10:30: 14+0 is due
    assert send_due(services) == 2
    sent = {
        (r.step_key, r.channel) for r in rows(services, done.enrollment_id) if r.status == "sent"
    }
    assert ("cramps-what-to-expect", "sms") in sent
    clock.advance(timedelta(days=6))  # 14+6: the 16-week step is now written to the outbox
    send_due(services)
    assert live(services, done.enrollment_id)[("prevention-exercises", "sms")] == "pending"
    # The scan says the pregnancy is 10 days less far on.
    old = enrollment(services, done.enrollment_id).edd
    planned = enrollments.change_edd(
        services.db,
        services.planner,
        done.enrollment_id,
        old + timedelta(days=10),
        EddSource.SCAN,
        clock.now(),
        actor="t",
    )
    after = rows(services, done.enrollment_id)
    v1 = [r for r in after if r.schedule_version == 1]
    assert all(r.status in ("sent", "cancelled", "skipped") for r in v1)
    assert any(r.status == "cancelled" for r in v1)
    assert {r.reason for r in v1 if r.status == "cancelled"} == {"edd_changed"}
    v2 = {(r.step_key, r.channel) for r in after if r.schedule_version == 2}
    again = {(p.step.key, p.channel.value): p for p in planned if p.status == "pending"}
    assert not (v2 | set(again)) & sent  # sent steps are never planned again
    assert again[("prevention-exercises", "sms")].due_at.date() == (
        clock.now().date() + timedelta(days=18)
    )  # today is 13+3 by the new due date
    assert enrollment(services, done.enrollment_id).schedule_version == 2
    with services.db.session() as session:
        change = session.execute(
            select(AuditEvent).where(AuditEvent.action == "edd_changed")
        ).scalar_one()
    assert change.detail["new"] == (old + timedelta(days=10)).isoformat()


def test_edd_change_is_checked(services: Services) -> None:
    done = enroll(services, weeks=20)
    with pytest.raises(InputError, match="edd: .* more than 44 weeks"):
        enrollments.change_edd(
            services.db,
            services.planner,
            done.enrollment_id,
            services.clock.now().date() + timedelta(weeks=45),
            EddSource.SCAN,
            services.clock.now(),
            actor="t",
        )
    assert live(services, done.enrollment_id)


def test_birth_cancels_pregnancy_steps_and_plans_after_birth_steps(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=36)
    born = clock.now().date() - timedelta(days=2)  # Saturday: day 7 is a Saturday too
    planned = enrollments.record_birth(
        services.db, services.planner, done.enrollment_id, born, clock.now(), actor="t"
    )
    all_rows = rows(services, done.enrollment_id)
    cancelled = {r.step_key for r in all_rows if r.status == "cancelled"}
    assert "after-birth-clot-risk" in cancelled
    assert {r.reason for r in all_rows if r.status == "cancelled"} == {"birth"}
    pending = {r.step_key: r for r in all_rows if r.status == "pending"}
    assert set(pending) == {"welcome", "after-birth-safety"}  # within the written horizon
    assert pending["after-birth-safety"].due_at.date() == born + timedelta(days=7)
    plan_after = {p.step.key for p in planned if p.status == "pending"}
    assert plan_after == {"welcome", "after-birth-safety", "programme-end"}
    with pytest.raises(StateError, match="already has a birth"):
        enrollments.record_birth(
            services.db, services.planner, done.enrollment_id, born, clock.now(), actor="t"
        )


@pytest.mark.parametrize(("days", "message"), [(-1, "is in the future"), (200, "before 20 weeks")])
def test_birth_date_is_checked(
    services: Services, clock: MovableClock, days: int, message: str
) -> None:
    done = enroll(services, weeks=30)
    with pytest.raises(InputError, match=f"birth_date: .*{message}"):
        enrollments.record_birth(
            services.db,
            services.planner,
            done.enrollment_id,
            clock.now().date() - timedelta(days=days),
            clock.now(),
            actor="t",
        )


def test_loss_cancels_everything_and_nothing_is_ever_sent_again(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=16)
    send_due(services)
    waiting = sum(1 for r in rows(services, done.enrollment_id) if r.status == "pending")
    cancelled = enrollments.record_loss(services.db, done.enrollment_id, clock.now(), actor="t")
    assert cancelled == waiting > 0
    assert not [r for r in rows(services, done.enrollment_id) if r.status == "pending"]
    assert enrollment(services, done.enrollment_id).status == "ended_loss"
    for _ in range(30):
        clock.advance(timedelta(days=7))
        assert send_due(services) == 0
        housekeeping.pause_overdue(services.db, clock.now())
    with pytest.raises(StateError):
        enrollments.resume(
            services.db, services.planner, done.enrollment_id, clock.now(), actor="t"
        )


def test_pause_then_resume_skips_what_was_missed_but_catches_up_the_warning(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=18)
    send_due(services)
    enrollments.pause(services.db, done.enrollment_id, clock.now(), actor="t")
    assert not [r for r in rows(services, done.enrollment_id) if r.status == "pending"]
    clock.advance(timedelta(weeks=5))  # 23+0: missed 20 (clot) and 22 (pre-eclampsia)
    assert send_due(services) == 0
    planned = enrollments.resume(
        services.db, services.planner, done.enrollment_id, clock.now(), actor="t"
    )
    by_step = {(p.step.key, p.channel.value): p for p in planned}
    assert by_step[("clot-warning-signs", "sms")].reason == "catch_up"
    assert by_step[("pre-eclampsia-signs", "sms")].reason == "catch_up"
    assert by_step[("easing-a-cramp", "sms")].status == "skipped"
    assert enrollment(services, done.enrollment_id).status == "active"


def test_overdue_pregnancy_without_a_birth_is_paused_for_staff(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=41)
    clock.advance(timedelta(days=7))  # 42+0: still fine
    assert housekeeping.pause_overdue(services.db, clock.now()) == []
    clock.advance(timedelta(days=1))  # 42+1
    assert housekeeping.pause_overdue(services.db, clock.now()) == [done.enrollment_id]
    record = enrollment(services, done.enrollment_id)
    assert (record.status, record.status_reason) == ("paused", "past_42_weeks_status_unknown")
    with pytest.raises(StateError, match="cannot resume"):
        enrollments.resume(
            services.db, services.planner, done.enrollment_id, clock.now(), actor="t"
        )


def test_programme_completes_after_the_last_after_birth_step(
    services: Services, clock: MovableClock
) -> None:
    done = enroll(services, weeks=39, channels="sms", email="")
    send_due(services)
    enrollments.record_birth(
        services.db,
        services.planner,
        done.enrollment_id,
        clock.now().date(),
        clock.now(),
        actor="t",
    )
    for _ in range(8 * 7 * 4):
        clock.advance(timedelta(hours=6))
        send_due(services)
    assert live(services, done.enrollment_id)[("programme-end", "sms")] == "sent"
    assert housekeeping.complete_finished(services.db, services.catalog, clock.now()) == [
        done.enrollment_id
    ]
    assert enrollment(services, done.enrollment_id).status == "completed"
