"""Changing what is scheduled: a new schedule version planned from now (after a new due date,
a birth, a resume, a re-subscription, a dead address), and extending every plan's rolling
horizon as its sends approach (a beat job).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.planner import Planner
from campaigns.rules.planning import PlannedSend
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.storage.db import Database
from campaigns.storage.models import Enrollment, Patient
from campaigns.storage.patients import lock_enrollment
from campaigns.storage.plans import cancel_live


def reschedule(
    session: Session,
    planner: Planner,
    enrollment: Enrollment,
    patient: Patient,
    now: datetime,
    reason: str,
) -> list[PlannedSend]:
    """A new schedule version planned from now (the caller holds the patient's lock): what is
    pending is cancelled, what was sent stays done, missed steps are skipped."""
    cancel_live(session, [enrollment.id], reason, now)
    enrollment.schedule_version += 1
    enrollment.updated_at = now
    session.flush()
    if enrollment.status != EnrollmentStatus.ACTIVE.value:
        return []
    return planner.replan(session, enrollment, patient, now)


def extend_plans(db: Database, planner: Planner, now: datetime, limit: int = 1000) -> int:
    """Write the sends that are coming within the horizon for plans that need it (beat job)."""
    threshold = now + planner.horizon / 2
    with db.session() as session:
        due = (
            session.execute(
                select(Enrollment.id)
                .where(
                    Enrollment.status == EnrollmentStatus.ACTIVE.value,
                    Enrollment.planned_until < threshold,
                )
                .order_by(Enrollment.planned_until)
                .limit(limit)
            )
            .scalars()
            .all()
        )
    extended = 0
    for enrollment_id in due:
        with db.session() as session:
            enrollment, patient = lock_enrollment(session, enrollment_id)
            if (
                enrollment.status != EnrollmentStatus.ACTIVE.value
                or enrollment.planned_until is None
                or enrollment.planned_until >= threshold
            ):
                continue  # changed while we waited for the lock
            planner.replan(session, enrollment, patient, now)
            extended += 1
    return extended
