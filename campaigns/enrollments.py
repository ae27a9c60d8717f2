"""The enrollment lifecycle: enrol (in bulk), change the EDD, record a birth or a loss, hold
for a loss reported in a text (then confirm or clear), pause, resume, stop. Each change is one
transaction that takes the patient's lock, cancels what must not go, bumps the schedule version
and writes the new plan.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import audit, metrics
from campaigns.planner import Planner, SkipRecords, Stored, skip_records, split
from campaigns.rules.clock import Clock
from campaigns.rules.consent import WORDING_VERSION
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.intake import EnrollmentRequest, IntakeRules, parse_enrollment
from campaigns.rules.planning import PlanInput, PlannedSend
from campaigns.rules.pregnancy import EddError, check_edd, pregnancy_start
from campaigns.rules.vocabulary import (
    Channel,
    ConsentPurpose,
    ConsentSource,
    EddSource,
    EnrollmentStatus,
)
from campaigns.rules.window import zone
from campaigns.scheduling import reschedule
from campaigns.storage import enrollment_rows as rows
from campaigns.storage.bulk import reserve_ids
from campaigns.storage.db import Database
from campaigns.storage.models import CampaignState, Enrollment, Patient
from campaigns.storage.patients import (
    active_enrollments,
    enrollments_of,
    lock_enrollment,
    lock_patient,
)
from campaigns.storage.plans import cancel_live, write_plans

LIVE = (EnrollmentStatus.ACTIVE.value, EnrollmentStatus.PAUSED.value)
HELD = EnrollmentStatus.LOSS_HOLD.value
#: What a confirmed loss (or a stop) ends: the live enrollments and those on a loss hold.
ENDABLE = (*LIVE, HELD)
#: A birth before 20+0 weeks is not a birth the programme can follow: staff record a loss.
EARLIEST_BIRTH_WEEKS = 20


@dataclass(frozen=True)
class Enrolled:
    patient_id: int
    enrollment_id: int
    planned: list[PlannedSend]  # the whole plan
    stored: list[PlannedSend]  # the part written as outbox rows now (the horizon)


def enroll_many(
    db: Database,
    planner: Planner,
    requests: Sequence[EnrollmentRequest],
    now: datetime,
    *,
    source: ConsentSource,
    actor: str,
    progress: Callable[[int], None] | None = None,
    then: Callable[[Session], None] | None = None,
    unbounded: bool = False,
) -> list[Enrolled]:
    """Enrol every request in one transaction: all are written, or (on any error) none.

    `progress` is told how many enrollments are planned and written so far (every 1,000);
    `then` adds its own writes (e.g. an import's audit row) to the same transaction;
    `unbounded` lifts the connection's statement timeout for it (a large import from the web).

    The rows are streamed (COPY on PostgreSQL) while they are planned, so planning overlaps
    the database's work; a number already known fails on its unique index, and only then is
    the offending row looked up to name it.
    """
    if not requests:
        return []
    _refuse_repeated_phones(requests)
    planner = planner.pinned()  # each plan and its rows' version from one catalog snapshot
    results: list[Enrolled] = []
    try:
        with db.session() as session:
            if unbounded and db.is_postgres:
                session.execute(text("SET LOCAL statement_timeout = 0"))
            _require_open_campaigns(session, {r.campaign for r in requests})
            patient_ids = reserve_ids(session, Patient, len(requests))
            enrollment_ids = reserve_ids(session, Enrollment, len(requests))
            rows.write_patients(session, patient_ids, requests, now)
            rows.write_consents(
                session,
                patient_ids,
                requests,
                now,
                source=source.value,
                wording=WORDING_VERSION,
                actor=actor,
            )
            rows.write_enrollments(
                session,
                _planned_enrollments(
                    planner, requests, patient_ids, enrollment_ids, now, results, progress
                ),
            )
            write_plans(
                session,
                [
                    (e.enrollment_id, 1, planner.catalog.version(r.campaign), e.stored)
                    for e, r in zip(results, requests, strict=True)
                ],
                now,
            )
            _audit_enrolment(session, now, actor, source, requests, patient_ids, enrollment_ids)
            if then is not None:
                then(session)
    except IntegrityError:
        with db.session() as session:
            _refuse_known_phones(session, requests)  # raises InputError naming the row
        raise
    metrics.ENROLLMENTS.labels(source.value).inc(len(results))
    return results


def _audit_enrolment(
    session: Session,
    now: datetime,
    actor: str,
    source: ConsentSource,
    requests: Sequence[EnrollmentRequest],
    patient_ids: Sequence[int],
    enrollment_ids: Sequence[int],
) -> None:
    """One audit event for the whole enrolment: each patient's consent events and enrollment
    row already say when, how and by whom they were enrolled."""
    single = len(requests) == 1
    audit.record(
        session,
        now,
        actor,
        "enrolled",
        patient_id=patient_ids[0] if single else None,
        enrollment_id=enrollment_ids[0] if single else None,
        count=len(requests),
        source=source.value,
        campaigns=sorted({r.campaign for r in requests}),
        patient_ids=_ranges(patient_ids),
        enrollment_ids=_ranges(enrollment_ids),
    )


def _planned_enrollments(
    planner: Planner,
    requests: Sequence[EnrollmentRequest],
    patient_ids: Sequence[int],
    enrollment_ids: Sequence[int],
    now: datetime,
    results: list[Enrolled],
    progress: Callable[[int], None] | None = None,
) -> Iterator[rows.NewEnrollment]:
    """Plan each request and yield its enrollment row; `results` collects the plans.

    plan() is pure: patients with the same campaign, due date, timezone and choices share one
    plan, and its split into outbox rows and skip records is made once.
    """
    plans: dict[tuple[PlanInput, str], tuple[list[PlannedSend], Stored, SkipRecords]] = {}
    local_days: dict[str, date] = {}
    for pid, eid, r in zip(patient_ids, enrollment_ids, requests, strict=True):
        day = local_days.get(r.timezone)
        if day is None:
            day = local_days[r.timezone] = now.astimezone(zone(r.timezone)).date()
        facts = PlanInput(
            timezone=r.timezone,
            edd=r.edd,
            enrolled_on=day,
            channels=r.channels,
            marketing_channels=_marketing_channels(r.consents),
        )
        found = plans.get((facts, r.campaign))
        if found is None:
            planned = planner.plan(facts, r.campaign, now)
            stored = split(planned, now, planner.horizon)
            found = plans[facts, r.campaign] = (planned, stored, skip_records(stored.skips, 1))
        planned, stored, skips = found
        results.append(Enrolled(pid, eid, planned, stored.rows))
        if progress is not None and len(results) % 1000 == 0:
            progress(len(results))
        yield rows.NewEnrollment(
            id=eid,
            patient_id=pid,
            campaign=r.campaign,
            edd=r.edd,
            edd_source=r.edd_source.value,
            edd_set_at=now,
            channels=",".join(sorted(r.channels)),
            status=EnrollmentStatus.ACTIVE.value,
            enrolled_at=now,
            enrolled_on=day,
            schedule_version=1,
            planned_until=stored.planned_until,
            skipped=skips,
            updated_at=now,
        )


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
        enrollment, patient = lock_enrollment(session, enrollment_id)
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
        planned = reschedule(session, planner, enrollment, patient, now, "edd_changed")
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
        enrollment, patient = lock_enrollment(session, enrollment_id)
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
        planned = reschedule(session, planner, enrollment, patient, now, "birth")
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
        enrollment, patient = lock_enrollment(session, enrollment_id)
        live = active_enrollments(session, patient.id, ENDABLE)
        if not live:
            raise StateError(f"enrollment {enrollment.id} is {enrollment.status}: nothing to stop")
        return end_for_loss(session, patient, now, actor=actor, live=live)


def end_for_loss(
    session: Session,
    patient: Patient,
    now: datetime,
    *,
    actor: str,
    live: Sequence[Enrollment] | None = None,
) -> int:
    """In the caller's transaction (holding the patient's lock): end every live or held
    enrollment for a pregnancy loss and cancel every send not yet handed to a provider.
    Returns how many."""
    if live is None:
        live = active_enrollments(session, patient.id, ENDABLE)
    cancelled = _stop_all(session, patient, live, "pregnancy_loss", "loss_recorded", now, actor)
    for each in live:
        _end(each, EnrollmentStatus.ENDED_LOSS, "pregnancy_loss", now)
    return cancelled


def hold_for_loss(session: Session, patient: Patient, now: datetime, *, actor: str) -> int:
    """In the caller's transaction (holding the patient's lock): a loss the patient told us of
    in a text. A text never ends a programme: every live enrollment is held (nothing further
    goes out: its pending sends are cancelled, and the send path re-checks the status at each
    go-ahead) until staff confirm the loss or clear the hold. Returns how many were cancelled."""
    live = active_enrollments(session, patient.id, LIVE)
    cancelled = _stop_all(session, patient, live, "loss_hold", "loss_hold", now, actor)
    for each in live:
        each.held_from = each.status
        each.status, each.status_reason, each.updated_at = (
            EnrollmentStatus.LOSS_HOLD,
            "loss_reported",
            now,
        )
    return cancelled


def _stop_all(
    session: Session,
    patient: Patient,
    live: Sequence[Enrollment],
    reason: str,
    action: str,
    now: datetime,
    actor: str,
) -> int:
    """Cancel every send of these enrollments not yet with a provider, and audit it with the
    sends it could no longer stop."""
    cancelled = cancel_live(session, [e.id for e in live], reason, now)
    audit.record(
        session,
        now,
        actor,
        action,
        patient_id=patient.id,
        enrollment_id=live[0].id if live else None,
        cancelled=cancelled.count,
        in_flight=cancelled.in_flight,
        enrollments=[e.id for e in live],
    )
    return cancelled.count


def confirm_loss(session: Session, patient: Patient, now: datetime, *, actor: str) -> int:
    """Staff confirmed a loss reported in a text (caller holds the lock): as `record_loss`."""
    live = active_enrollments(session, patient.id, ENDABLE)
    if not live:
        raise StateError(f"patient {patient.id} has no programme left to end")
    return end_for_loss(session, patient, now, actor=actor, live=live)


#: A whole campaign's state (campaigns.campaign_states): no row is running.
CAMPAIGN_RUNNING, CAMPAIGN_PAUSED, CAMPAIGN_ENDED = "running", "paused", "ended"
CAMPAIGN_PAUSE_REASON, CAMPAIGN_END_REASON = "campaign_paused", "campaign_ended"


def campaign_state(session: Session, campaign: str) -> str:
    found = session.scalar(select(CampaignState.state).where(CampaignState.campaign == campaign))
    return found or CAMPAIGN_RUNNING


def _require_open_campaigns(session: Session, campaigns: set[str]) -> None:
    """Refuse an enrolment into a campaign paused or ended for everyone, read under a share
    lock: a pause (which locks the row to change it) waits for this enrolment to commit, then
    pauses it too; an enrolment after the pause is refused."""
    closed = session.execute(
        select(CampaignState.campaign, CampaignState.state)
        .where(CampaignState.campaign.in_(sorted(campaigns)))
        .with_for_update(read=True)
    ).all()
    for campaign, state in closed:
        if state != CAMPAIGN_RUNNING:
            raise InputError("campaign", f"{campaign} is {state} for everyone: nobody can join it")


def clear_loss_hold(
    session: Session, planner: Planner, patient: Patient, now: datetime, *, actor: str
) -> list[PlannedSend]:
    """Staff found no loss (caller holds the lock): each held enrollment goes back to what it
    was, and an active one is planned again from now. Steps already sent are never repeated;
    steps whose day passed during the hold are skipped, bar the latest warning sign."""
    held = active_enrollments(session, patient.id, (HELD,))
    if not held:
        raise StateError(f"patient {patient.id} has no messages on a loss hold")
    planned: list[PlannedSend] = []
    for each in held:
        each.status = EnrollmentStatus(each.held_from or EnrollmentStatus.PAUSED)
        each.status_reason, each.held_from = None, None
        # A campaign paused or ended for everyone while she was held stays so for her too.
        state = campaign_state(session, each.campaign)
        if state == CAMPAIGN_PAUSED:
            each.status, each.status_reason = EnrollmentStatus.PAUSED, CAMPAIGN_PAUSE_REASON
        elif state == CAMPAIGN_ENDED:
            _end(each, EnrollmentStatus.STOPPED, CAMPAIGN_END_REASON, now)
        planned.extend(reschedule(session, planner, each, patient, now, "loss_hold_cleared"))
    audit.record(
        session,
        now,
        actor,
        "loss_hold_cleared",
        patient_id=patient.id,
        enrollment_id=held[0].id,
        enrollments=[e.id for e in held],
        planned=len(planned),
    )
    return planned


def pause(
    db: Database, enrollment_id: int, now: datetime, *, actor: str, reason: str = "paused_by_staff"
) -> int:
    with db.session() as session:
        enrollment, patient = lock_enrollment(session, enrollment_id)
        _require(enrollment, (EnrollmentStatus.ACTIVE.value,), "pause")
        cancelled = cancel_live(session, [enrollment.id], "paused", now)
        enrollment.status, enrollment.status_reason, enrollment.updated_at = (
            EnrollmentStatus.PAUSED,
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
            cancelled=cancelled.count,
            in_flight=cancelled.in_flight,
            reason=reason,
        )
        return cancelled.count


def resume(
    db: Database, planner: Planner, enrollment_id: int, now: datetime, *, actor: str
) -> list[PlannedSend]:
    """Plan again from now: steps missed while paused are skipped, bar the latest warning."""
    with db.session() as session:
        enrollment, patient = lock_enrollment(session, enrollment_id)
        _require(enrollment, (EnrollmentStatus.PAUSED.value,), "resume")
        state = campaign_state(session, enrollment.campaign)
        if state != CAMPAIGN_RUNNING:
            raise StateError(
                f"cannot resume: the campaign is {state} for everyone"
                + ("; resume it on its page first" if state == CAMPAIGN_PAUSED else "")
            )
        today = now.astimezone(zone(patient.timezone)).date()
        if enrollment.birth_date is None:
            try:
                check_edd(enrollment.edd, today)
            except EddError as exc:
                raise StateError(
                    f"cannot resume: {exc}; record the birth or a new due date"
                ) from None
        enrollment.status, enrollment.status_reason = EnrollmentStatus.ACTIVE, None
        planned = reschedule(session, planner, enrollment, patient, now, "resumed")
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
        enrollment, patient = lock_enrollment(session, enrollment_id)
        _require(enrollment, ENDABLE, "stop")
        cancelled = cancel_live(session, [enrollment.id], reason, now)
        _end(enrollment, EnrollmentStatus.STOPPED, reason, now)
        audit.record(
            session,
            now,
            actor,
            "stopped",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            cancelled=cancelled.count,
            in_flight=cancelled.in_flight,
            reason=reason,
        )
        return cancelled.count


#: A programme that has ended, after which the patient may be enrolled again.
ENDED = (
    EnrollmentStatus.COMPLETED.value,
    EnrollmentStatus.STOPPED.value,
    EnrollmentStatus.ENDED_LOSS.value,
)


def reenroll(
    db: Database,
    planner: Planner,
    patient_id: int,
    fields: Mapping[str, str | None],
    rules: IntakeRules,
    now: datetime,
    *,
    actor: str,
) -> Enrolled:
    """Enrol a patient again once her programme in the campaign has ended (completed,
    stopped, or a loss followed by a new pregnancy): a new enrollment, checked as the enrol
    form is, from her record's details and the form's due date, channels and consents.

    Refused while a programme in the campaign is live (uq_enrollments_live allows one); after
    a loss the new due date must come after the one of the pregnancy that ended. Her ledger,
    suppressions and sent history count as for any plan (a number that said STOP stays
    stopped until she gives her consent back).
    """
    with db.session() as session:
        patient = lock_patient(session, patient_id)
        if patient.erased_at is not None:
            raise StateError("Her details were erased on request: she cannot be enrolled again")
        request = parse_enrollment(
            {
                **fields,
                "name": patient.name,
                "phone": patient.phone,
                "email": patient.email,
                "tz": patient.timezone,
                "language": patient.language,
                "discreet": "yes" if patient.discreet else "",
                "clinic_ref": patient.clinic_ref,
            },
            rules,
            now,
        )
        history = enrollments_of(session, patient.id, request.campaign)
        live = [e for e in history if e.status not in ENDED]
        if live:
            raise StateError(
                f"She is already enrolled in {request.campaign} "
                f"({live[-1].status.replace('_', ' ')}): enrol her again only once that "
                "programme has ended"
            )
        lost = [e for e in history if e.status == EnrollmentStatus.ENDED_LOSS.value]
        if lost and request.edd <= lost[-1].edd:
            raise InputError(
                "edd",
                "The due date must be after the due date of the pregnancy that ended "
                f"({lost[-1].edd:%d %B %Y}): enter the new pregnancy's due date",
            )
        rows.write_consents(
            session,
            [patient.id],
            [request],
            now,
            source=ConsentSource.FORM.value,
            wording=WORDING_VERSION,
            actor=actor,
        )
        enrollment = Enrollment(
            patient_id=patient.id,
            campaign=request.campaign,
            edd=request.edd,
            edd_source=request.edd_source.value,
            edd_set_at=now,
            channels=",".join(sorted(request.channels)),
            status=EnrollmentStatus.ACTIVE,
            enrolled_at=now,
            enrolled_on=now.astimezone(zone(patient.timezone)).date(),
            schedule_version=1,
            skipped=[],
            updated_at=now,
        )
        session.add(enrollment)
        session.flush()
        planned = planner.replan(session, enrollment, patient, now)
        audit.record(
            session,
            now,
            actor,
            "re_enrolled",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            campaign=request.campaign,
            after=[e.id for e in history],
        )
        stored = [p for p in planned if p.status.value == "pending"]
        result = Enrolled(patient.id, enrollment.id, planned, stored)
    metrics.ENROLLMENTS.labels(ConsentSource.FORM.value).inc()
    return result


def _require(enrollment: Enrollment, allowed: Sequence[str], action: str) -> None:
    if enrollment.status not in allowed:
        raise StateError(f"cannot {action}: enrollment {enrollment.id} is {enrollment.status}")


def _end(enrollment: Enrollment, status: EnrollmentStatus, reason: str, now: datetime) -> None:
    enrollment.status, enrollment.status_reason, enrollment.held_from = status, reason, None
    enrollment.ended_at = enrollment.updated_at = now


def _marketing_channels(consents: frozenset[ConsentPurpose]) -> frozenset[Channel]:
    chosen = set()
    if ConsentPurpose.MARKETING_SMS in consents:
        chosen.add(Channel.SMS)
    if ConsentPurpose.MARKETING_EMAIL in consents:
        chosen.add(Channel.EMAIL)
    return frozenset(chosen)


def _ranges(ids: Sequence[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 8] -> [[1, 3], [7, 8]]: reserved ids are nearly always one run."""
    runs: list[list[int]] = []
    for value in sorted(ids):
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return runs


def _refuse_repeated_phones(requests: Sequence[EnrollmentRequest]) -> None:
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        if request.phone is None:
            continue
        if request.phone in seen:
            raise InputError(
                "phone",
                f"the same number is in rows {seen[request.phone] + 1} and {index + 1}",
                row=index + 1 if len(requests) > 1 else None,
            )
        seen[request.phone] = index


def _refuse_known_phones(session: Session, requests: Sequence[EnrollmentRequest]) -> None:
    phones = {r.phone: i for i, r in enumerate(requests) if r.phone is not None}
    known = rows.known_phone(session, list(phones))
    if known is not None:
        phone, patient_id = known
        row = phones[phone] + 1 if len(requests) > 1 else None
        raise InputError("phone", f"this number already belongs to patient {patient_id}", row=row)


@dataclass(frozen=True)
class Enrollments:
    """The enrollment lifecycle as one service, on the clock: what the CLI, the staff UI and
    the demo call (each operation is one transaction under the patient's lock)."""

    db: Database
    planner: Planner
    clock: Clock

    def enroll(
        self, requests: Sequence[EnrollmentRequest], *, source: ConsentSource, actor: str
    ) -> list[Enrolled]:
        return enroll_many(
            self.db, self.planner, requests, self.clock.now(), source=source, actor=actor
        )

    def change_edd(
        self, enrollment_id: int, edd: date, source: EddSource, *, actor: str
    ) -> list[PlannedSend]:
        return change_edd(
            self.db, self.planner, enrollment_id, edd, source, self.clock.now(), actor=actor
        )

    def record_birth(
        self, enrollment_id: int, birth_date: date, *, actor: str
    ) -> list[PlannedSend]:
        return record_birth(
            self.db, self.planner, enrollment_id, birth_date, self.clock.now(), actor=actor
        )

    def record_loss(self, enrollment_id: int, *, actor: str) -> int:
        return record_loss(self.db, enrollment_id, self.clock.now(), actor=actor)

    def pause(self, enrollment_id: int, *, actor: str) -> int:
        return pause(self.db, enrollment_id, self.clock.now(), actor=actor)

    def resume(self, enrollment_id: int, *, actor: str) -> list[PlannedSend]:
        return resume(self.db, self.planner, enrollment_id, self.clock.now(), actor=actor)

    def reenroll(
        self,
        patient_id: int,
        fields: Mapping[str, str | None],
        rules: IntakeRules,
        *,
        actor: str,
    ) -> Enrolled:
        return reenroll(
            self.db, self.planner, patient_id, fields, rules, self.clock.now(), actor=actor
        )
