"""Patients' and enrollments' rows as a change needs them: locked, and as they are now.

Every change that can stop or move a send takes the patient's row lock first (FOR UPDATE; on
SQLite the write lock); the send path takes FOR SHARE on the same row for its short go-ahead
transactions, so a cancellation and a provider call never interleave (campaigns.sending).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns.rules.errors import NotFoundError
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.storage.models import Enrollment, Patient


def lock_patient(session: Session, patient_id: int) -> Patient:
    """Take the patient's row lock for a change that can stop or move sends."""
    found = lock_patient_if_any(session, patient_id)
    if found is None:
        raise NotFoundError(f"no patient {patient_id}")
    return found


def lock_patient_if_any(session: Session, patient_id: int) -> Patient | None:
    return session.execute(
        select(Patient).where(Patient.id == patient_id).with_for_update()
    ).scalar_one_or_none()


def lock_enrollment(session: Session, enrollment_id: int) -> tuple[Enrollment, Patient]:
    """The patient's lock, then the enrollment as it is now (changes we waited on included)."""
    patient_id = session.execute(
        select(Enrollment.patient_id).where(Enrollment.id == enrollment_id)
    ).scalar_one_or_none()
    if patient_id is None:
        raise NotFoundError(f"no enrollment {enrollment_id}")
    patient = lock_patient(session, patient_id)
    enrollment = session.execute(
        select(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return enrollment, patient


def active_enrollments(
    session: Session,
    patient_id: int,
    statuses: Sequence[str] = (EnrollmentStatus.ACTIVE.value,),
) -> Sequence[Enrollment]:
    """The patient's enrollments in these statuses (active by default), oldest first, as they
    are now (the caller holds the patient's lock)."""
    return (
        session.execute(
            select(Enrollment)
            .where(Enrollment.patient_id == patient_id, Enrollment.status.in_(statuses))
            .order_by(Enrollment.id)
            .execution_options(populate_existing=True)
        )
        .scalars()
        .all()
    )


def phone_owner(session: Session, phone: str) -> int | None:
    """The patient who has this number (E.164), if any (uq_patients_phone)."""
    found = session.execute(select(Patient.id).where(Patient.phone == phone)).scalar_one_or_none()
    return None if found is None else int(found)


def enrollments_of(session: Session, patient_id: int, campaign: str) -> Sequence[Enrollment]:
    """Every enrollment of the patient in this campaign, oldest first, as they are now."""
    return (
        session.execute(
            select(Enrollment)
            .where(Enrollment.patient_id == patient_id, Enrollment.campaign == campaign)
            .order_by(Enrollment.id)
            .execution_options(populate_existing=True)
        )
        .scalars()
        .all()
    )
