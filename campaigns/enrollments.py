"""The enrollment lifecycle: enrol (in bulk), change the EDD, record a birth or a loss, pause,
resume, stop. Each change is one transaction that takes the patient's lock, cancels what must
not go, bumps the schedule version and writes the new plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.consent import WORDING_VERSION
from campaigns.domain import (
    Channel,
    ConsentPurpose,
    ConsentSource,
    EddSource,
    EnrollmentStatus,
)
from campaigns.errors import InputError, NotFoundError, StateError
from campaigns.intake import EnrolmentRequest
from campaigns.planning import PlanInput, PlannedSend, plan
from campaigns.pregnancy import EddError, check_edd, pregnancy_start
from campaigns.scheduling import Planner, cancel_live, lock_patient, write_plans
from campaigns.storage.db import Database
from campaigns.storage.models import ConsentEvent, Enrollment, Patient
from campaigns.window import zone

LIVE = (EnrollmentStatus.ACTIVE.value, EnrollmentStatus.PAUSED.value)
#: A birth before 20+0 weeks is not a birth the programme can follow: staff record a loss.
EARLIEST_BIRTH_WEEKS = 20


@dataclass(frozen=True)
class Enrolled:
    patient_id: int
    enrollment_id: int
    planned: list[PlannedSend]


def enrol_many(
    db: Database,
    planner: Planner,
    requests: Sequence[EnrolmentRequest],
    now: datetime,
    *,
    source: ConsentSource,
    actor: str,
) -> list[Enrolled]:
    """Enrol every request in one transaction: all are written, or (on any error) none."""
    if not requests:
        return []
    with db.session() as session:
        _refuse_known_phones(session, requests)
        patient_ids = _insert_returning_ids(
            session,
            Patient,
            [
                {
                    "name": r.name,
                    "phone": r.phone,
                    "email": r.email,
                    "timezone": r.timezone,
                    "language": r.language,
                    "discreet": r.discreet,
                    "clinic_ref": r.clinic_ref,
                    "created_at": now,
                }
                for r in requests
            ],
        )
        session.execute(
            insert(ConsentEvent),
            [
                {
                    "patient_id": pid,
                    "purpose": purpose.value,
                    "channel": None,
                    "granted": True,
                    "occurred_at": now,
                    "source": source.value,
                    "wording_version": WORDING_VERSION,
                    "actor": actor,
                }
                for pid, r in zip(patient_ids, requests, strict=True)
                for purpose in sorted(r.consents)
            ],
        )
        local_days = [now.astimezone(zone(r.timezone)).date() for r in requests]
        enrollment_ids = _insert_returning_ids(
            session,
            Enrollment,
            [
                {
                    "patient_id": pid,
                    "campaign": r.campaign,
                    "edd": r.edd,
                    "edd_source": r.edd_source,
                    "edd_set_at": now,
                    "channels": ",".join(sorted(r.channels)),
                    "status": EnrollmentStatus.ACTIVE.value,
                    "enrolled_at": now,
                    "enrolled_on": day,
                    "schedule_version": 1,
                    "updated_at": now,
                }
                for pid, r, day in zip(patient_ids, requests, local_days, strict=True)
            ],
        )
        results = []
        for pid, eid, r, day in zip(patient_ids, enrollment_ids, requests, local_days, strict=True):
            facts = PlanInput(
                timezone=r.timezone,
                edd=r.edd,
                enrolled_on=day,
                channels=r.channels,
                marketing_channels=_marketing_channels(r.consents),
            )
            results.append(
                Enrolled(pid, eid, plan(facts, planner.catalog[r.campaign], planner.window, now))
            )
        write_plans(session, [(e.enrollment_id, 1, e.planned) for e in results], now)
        audit.record_many(
            session,
            [
                {
                    "occurred_at": now,
                    "actor": actor,
                    "action": "enrolled",
                    "patient_id": e.patient_id,
                    "enrollment_id": e.enrollment_id,
                    "message_id": None,
                    "detail": {
                        "campaign": r.campaign,
                        "edd_source": r.edd_source.value,
                        "source": source.value,
                        "planned": len(e.planned),
                    },
                }
                for e, r in zip(results, requests, strict=True)
            ],
        )
    return results


def change_edd(
    db: Database,
    planner: Planner,
    enrollment_id: int,
    edd: date,
    edd_source: EddSource,
    now: datetime,
    *,
    actor: str,
) -> list[PlannedSend]:
    """A new due date (e.g. after the dating scan): re-plan; sent steps are never repeated."""
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        _require(enrollment, LIVE, "change the due date")
        try:
            check_edd(
                edd,
                now.astimezone(zone(patient.timezone)).date(),
                pregnancy_ended=enrollment.birth_date is not None,
            )
        except EddError as exc:
            raise InputError("edd", str(exc)) from None
        old = enrollment.edd
        enrollment.edd, enrollment.edd_source, enrollment.edd_set_at = edd, edd_source, now
        planned = _reschedule(session, planner, enrollment, patient, now, "edd_changed")
        audit.record(
            session,
            now,
            actor,
            "edd_changed",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            old=old.isoformat(),
            new=edd.isoformat(),
            edd_source=edd_source.value,
            version=enrollment.schedule_version,
        )
        return planned


def record_birth(
    db: Database,
    planner: Planner,
    enrollment_id: int,
    birth_date: date,
    now: datetime,
    *,
    actor: str,
) -> list[PlannedSend]:
    """Pregnancy steps stop; the after-birth steps are planned from the birth date."""
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        _require(enrollment, LIVE, "record a birth")
        if enrollment.birth_date is not None:
            raise StateError(
                f"enrollment {enrollment.id} already has a birth on "
                f"{enrollment.birth_date.isoformat()}"
            )
        today = now.astimezone(zone(patient.timezone)).date()
        earliest = pregnancy_start(enrollment.edd) + timedelta(weeks=EARLIEST_BIRTH_WEEKS)
        if birth_date > today:
            raise InputError("birth_date", f"{birth_date.isoformat()} is in the future")
        if birth_date < earliest:
            raise InputError(
                "birth_date",
                f"{birth_date.isoformat()} is before 20 weeks of "
                "pregnancy; if the pregnancy ended, record a loss instead",
            )
        enrollment.birth_date = birth_date
        planned = _reschedule(session, planner, enrollment, patient, now, "birth")
        audit.record(
            session,
            now,
            actor,
            "birth_recorded",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            birth_date=birth_date.isoformat(),
        )
        return planned


def record_loss(db: Database, enrollment_id: int, now: datetime, *, actor: str) -> int:
    """Stop everything for this patient at once; nothing automated is ever sent again."""
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        live = (
            session.execute(
                select(Enrollment).where(
                    Enrollment.patient_id == patient.id, Enrollment.status.in_(LIVE)
                )
            )
            .scalars()
            .all()
        )
        if not live:
            raise StateError(f"enrollment {enrollment.id} is {enrollment.status}: nothing to stop")
        cancelled = cancel_live(session, [e.id for e in live], "pregnancy_loss", now)
        for each in live:
            _end(each, EnrollmentStatus.ENDED_LOSS, "pregnancy_loss", now)
        audit.record(
            session,
            now,
            actor,
            "loss_recorded",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            cancelled=cancelled,
            enrollments=[e.id for e in live],
        )
        return cancelled


def pause(
    db: Database, enrollment_id: int, now: datetime, *, actor: str, reason: str = "paused_by_staff"
) -> int:
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        _require(enrollment, (EnrollmentStatus.ACTIVE.value,), "pause")
        cancelled = cancel_live(session, [enrollment.id], "paused", now)
        enrollment.status, enrollment.status_reason, enrollment.updated_at = (
            EnrollmentStatus.PAUSED.value,
            reason,
            now,
        )
        audit.record(
            session,
            now,
            actor,
            "paused",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            cancelled=cancelled,
            reason=reason,
        )
        return cancelled


def resume(
    db: Database, planner: Planner, enrollment_id: int, now: datetime, *, actor: str
) -> list[PlannedSend]:
    """Plan again from now: steps missed while paused are skipped, bar the latest warning."""
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        _require(enrollment, (EnrollmentStatus.PAUSED.value,), "resume")
        today = now.astimezone(zone(patient.timezone)).date()
        if enrollment.birth_date is None:
            try:
                check_edd(enrollment.edd, today)
            except EddError as exc:
                raise StateError(
                    f"cannot resume: {exc}; record the birth or a new due date"
                ) from None
        enrollment.status, enrollment.status_reason = EnrollmentStatus.ACTIVE.value, None
        planned = _reschedule(session, planner, enrollment, patient, now, "resumed")
        audit.record(
            session,
            now,
            actor,
            "resumed",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            version=enrollment.schedule_version,
        )
        return planned


def stop(db: Database, enrollment_id: int, now: datetime, *, actor: str, reason: str) -> int:
    with db.session() as session:
        enrollment, patient = _lock(session, enrollment_id)
        _require(enrollment, LIVE, "stop")
        cancelled = cancel_live(session, [enrollment.id], reason, now)
        _end(enrollment, EnrollmentStatus.STOPPED, reason, now)
        audit.record(
            session,
            now,
            actor,
            "stopped",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            cancelled=cancelled,
            reason=reason,
        )
        return cancelled


def _reschedule(
    session: Session,
    planner: Planner,
    enrollment: Enrollment,
    patient: Patient,
    now: datetime,
    reason: str,
) -> list[PlannedSend]:
    cancel_live(session, [enrollment.id], reason, now)
    enrollment.schedule_version += 1
    enrollment.updated_at = now
    session.flush()
    if enrollment.status != EnrollmentStatus.ACTIVE.value:
        return []
    return planner.replan(session, enrollment, patient, now)


def _lock(session: Session, enrollment_id: int) -> tuple[Enrollment, Patient]:
    patient_id = session.execute(
        select(Enrollment.patient_id).where(Enrollment.id == enrollment_id)
    ).scalar_one_or_none()
    if patient_id is None:
        raise NotFoundError(f"no enrollment {enrollment_id}")
    patient = lock_patient(session, patient_id)
    # Read after the lock, so a change committed while we waited is seen.
    enrollment = session.execute(
        select(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return enrollment, patient


def _require(enrollment: Enrollment, allowed: Sequence[str], action: str) -> None:
    if enrollment.status not in allowed:
        raise StateError(f"cannot {action}: enrollment {enrollment.id} is {enrollment.status}")


def _end(enrollment: Enrollment, status: EnrollmentStatus, reason: str, now: datetime) -> None:
    enrollment.status, enrollment.status_reason = status.value, reason
    enrollment.ended_at = enrollment.updated_at = now


def _marketing_channels(consents: frozenset[ConsentPurpose]) -> frozenset[Channel]:
    chosen = set()
    if ConsentPurpose.MARKETING_SMS in consents:
        chosen.add(Channel.SMS)
    if ConsentPurpose.MARKETING_EMAIL in consents:
        chosen.add(Channel.EMAIL)
    return frozenset(chosen)


def _refuse_known_phones(session: Session, requests: Sequence[EnrolmentRequest]) -> None:
    phones: dict[str, int] = {}
    for index, request in enumerate(requests):
        if request.phone is None:
            continue
        if request.phone in phones:
            raise InputError(
                "phone",
                f"the same number is in rows {phones[request.phone] + 1} and {index + 1}",
                row=index + 1 if len(requests) > 1 else None,
            )
        phones[request.phone] = index
    for start in range(0, len(phones), 1000):
        chunk = list(phones)[start : start + 1000]
        known = session.execute(
            select(Patient.phone, Patient.id).where(Patient.phone.in_(chunk))
        ).first()
        if known is not None and known[0] is not None:
            row = phones[known[0]] + 1 if len(requests) > 1 else None
            raise InputError("phone", f"this number already belongs to patient {known[1]}", row=row)


def _insert_returning_ids(
    session: Session, model: type[Patient] | type[Enrollment], rows: list[dict[str, object]]
) -> list[int]:
    result = session.execute(insert(model).returning(model.id, sort_by_parameter_order=True), rows)
    return [row[0] for row in result]
