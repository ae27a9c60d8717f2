"""Slow, periodic upkeep of enrollments (run by beat every few minutes).

- Past 42+0 weeks with no birth or end recorded, nobody knows what happened: pause the
  pregnancy messages and leave it to staff (never guess after a possible loss).
- After the last after-birth step, with nothing left to send, the programme is complete.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, select

from campaigns import audit
from campaigns.enrollments import pause
from campaigns.rules.catalog import Catalog
from campaigns.rules.pregnancy import MAX_GESTATION_DAYS, TERM_DAYS, is_overdue_unconfirmed
from campaigns.rules.vocabulary import Anchor, EnrollmentStatus, MessageStatus
from campaigns.rules.window import zone
from campaigns.storage.db import Database
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage

SYSTEM = "system:housekeeping"
_OPEN = (MessageStatus.PENDING.value, MessageStatus.CLAIMED.value, MessageStatus.SENDING.value)


def pause_overdue(db: Database, now: datetime) -> list[int]:
    """Pause active enrollments past 42+0 weeks with no recorded birth; returns their ids."""
    # One day of slack covers every timezone; the exact local check is below.
    cutoff = (now - timedelta(days=MAX_GESTATION_DAYS - TERM_DAYS - 1)).date()
    with db.session() as session:
        candidates = session.execute(
            select(Enrollment.id, Enrollment.edd, Patient.timezone)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(
                Enrollment.status == EnrollmentStatus.ACTIVE.value,
                Enrollment.birth_date.is_(None),
                Enrollment.edd <= cutoff,
            )
        ).all()
    paused = []
    for enrollment_id, edd, timezone in candidates:
        if is_overdue_unconfirmed(edd, now.astimezone(zone(timezone)).date()):
            pause(db, enrollment_id, now, actor=SYSTEM, reason="past_42_weeks_status_unknown")
            paused.append(enrollment_id)
    return paused


def complete_finished(db: Database, catalog: Catalog, now: datetime) -> list[int]:
    """Mark complete the enrollments whose after-birth programme has run its course."""
    with db.session() as session:
        candidates = (
            session.execute(
                select(Enrollment).where(
                    Enrollment.status == EnrollmentStatus.ACTIVE.value,
                    Enrollment.birth_date.is_not(None),
                    Enrollment.planned_until.is_(None),  # nothing left to write
                    ~exists().where(
                        ScheduledMessage.enrollment_id == Enrollment.id,
                        ScheduledMessage.status.in_(_OPEN),
                    ),
                )
            )
            .scalars()
            .all()
        )
        completed = []
        for enrollment in candidates:
            assert enrollment.birth_date is not None
            last = max(
                (
                    s.offset.total_days
                    for s in catalog[enrollment.campaign].steps
                    if s.anchor is Anchor.BIRTH
                ),
                default=0,
            )
            if now.date() > enrollment.birth_date + timedelta(days=last):
                enrollment.status = EnrollmentStatus.COMPLETED
                enrollment.status_reason = "programme_finished"
                enrollment.ended_at = enrollment.updated_at = now
                audit.record(
                    session,
                    now,
                    SYSTEM,
                    "completed",
                    patient_id=enrollment.patient_id,
                    enrollment_id=enrollment.id,
                )
                completed.append(enrollment.id)
    return completed
