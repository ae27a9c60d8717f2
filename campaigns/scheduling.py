"""Turning plans into outbox rows and back: the bridge between planning (pure) and storage.

Every change that can stop or move a send takes the patient's row lock first (FOR UPDATE; on
SQLite the write lock), and the send path holds FOR SHARE on the same row from its last check
to its record. So a cancellation either waits for an in-flight send to finish or is seen by it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session

from campaigns.catalog import Catalog
from campaigns.consent import ConsentRecord, ConsentState, current
from campaigns.contacts import address_hash
from campaigns.errors import NotFoundError
from campaigns.planning import PlanInput, PlannedSend, plan
from campaigns.storage.bulk import NULL, copy_lines, is_postgres, iso, write_rows
from campaigns.storage.db import Database, among
from campaigns.storage.models import (
    ConsentEvent,
    Enrollment,
    Patient,
    ScheduledMessage,
    Suppression,
)
from campaigns.vocabulary import (
    CANCELLABLE,
    NOT_SENT_FINAL,
    Channel,
    ConsentPurpose,
    EnrollmentStatus,
    MessageStatus,
)
from campaigns.window import SendWindow, zone

PLAN_COLUMNS = (
    "enrollment_id",
    "step_key",
    "channel",
    "kind",
    "schedule_version",
    "status",
    "reason",
    "due_at",
    "next_attempt_at",
    "expires_at",
    "attempts",
    "updated_at",
)


def lock_patient(session: Session, patient_id: int) -> Patient:
    """Take the patient's row lock for a change that can stop or move sends."""
    return session.execute(
        select(Patient).where(Patient.id == patient_id).with_for_update()
    ).scalar_one()


def consent_state(session: Session, patient_id: int) -> ConsentState:
    return consent_states(session.connection(), [patient_id])[patient_id]


def consent_states(connection: Connection, patient_ids: Sequence[int]) -> dict[int, ConsentState]:
    """Each patient's consent today, replayed from the ledger in one query."""
    postgres = connection.dialect.name == "postgresql"
    rows: dict[int, list[Any]] = {pid: [] for pid in patient_ids}
    for row in connection.execute(
        select(
            ConsentEvent.patient_id,
            ConsentEvent.purpose,
            ConsentEvent.channel,
            ConsentEvent.granted,
        )
        .where(among(ConsentEvent.patient_id, patient_ids, postgres=postgres))
        .order_by(ConsentEvent.id)
    ):
        rows[row.patient_id].append(row)
    return {pid: state_of(found) for pid, found in rows.items()}


def state_of(rows: Iterable[Any]) -> ConsentState:
    """Today's consent from ledger rows (oldest first) with purpose, channel and granted."""
    return current(
        ConsentRecord(
            ConsentPurpose(r.purpose), Channel(r.channel) if r.channel else None, r.granted
        )
        for r in rows
    )


def suppressed_channels(session: Session, patient: Patient) -> frozenset[Channel]:
    addresses = {Channel.SMS: patient.phone, Channel.EMAIL: patient.email}
    hashes = {address_hash(a): c for c, a in addresses.items() if a}
    found = suppressions(session.connection(), hashes)
    return frozenset(Channel(c) for c, h in found if hashes.get(h) == Channel(c))


def suppressions(connection: Connection, hashes: Collection[str]) -> set[tuple[str, str]]:
    """The (channel, address hash) suppressions among these address hashes, in one query."""
    if not hashes:
        return set()
    postgres = connection.dialect.name == "postgresql"
    found = connection.execute(
        select(Suppression.channel, Suppression.address_hash).where(
            among(Suppression.address_hash, hashes, postgres=postgres)
        )
    )
    return {(channel, hashed) for channel, hashed in found}


@dataclass(frozen=True)
class Cancelled:
    """What a cancellation stopped, and what it could not: sends already with a provider."""

    count: int
    in_flight: list[int]  # ids whose call had started before the cancellation committed


#: Rows a cancellation can still stop: not yet handed to a provider (their go-ahead has not
#: committed). The send path re-checks these under the same lock before any call.
_STOPPABLE = or_(
    ScheduledMessage.status.in_([s.value for s in CANCELLABLE]),
    and_(
        ScheduledMessage.status == MessageStatus.SENDING.value,
        ScheduledMessage.call_started_at.is_(None),
    ),
)
_WITH_PROVIDER = and_(
    ScheduledMessage.status.in_([MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value]),
    ScheduledMessage.call_started_at.is_not(None),
)


def cancel_live(
    session: Session, enrollment_ids: Iterable[int], reason: str, now: datetime
) -> Cancelled:
    """Cancel every row not yet handed to a provider (in the caller's transaction, which holds
    the patient's lock)."""
    return _cancel(session, list(enrollment_ids), None, reason, now)


def cancel_channel(
    session: Session, patient_id: int, channel: Channel, reason: str, now: datetime
) -> Cancelled:
    """Cancel a patient's not-yet-sent messages on one channel, across their enrollments."""
    # The enrollment ids first: with them the UPDATE uses the enrollment_id index, where an
    # IN (subquery) was planned as a scan of the whole outbox (8 ms at 30,000 rows).
    enrollment_ids = list(
        session.execute(select(Enrollment.id).where(Enrollment.patient_id == patient_id)).scalars()
    )
    return _cancel(session, enrollment_ids, channel, reason, now)


def _cancel(
    session: Session,
    enrollment_ids: list[int],
    channel: Channel | None,
    reason: str,
    now: datetime,
) -> Cancelled:
    if not enrollment_ids:
        return Cancelled(0, [])
    scope: list[ColumnElement[bool]] = [ScheduledMessage.enrollment_id.in_(enrollment_ids)]
    if channel is not None:
        scope.append(ScheduledMessage.channel == channel.value)
    result = session.execute(
        update(ScheduledMessage)
        .where(*scope, _STOPPABLE)
        .values(
            status=MessageStatus.CANCELLED.value, reason=reason, claim_token=None, updated_at=now
        )
    )
    in_flight = session.execute(
        select(ScheduledMessage.id).where(*scope, _WITH_PROVIDER).order_by(ScheduledMessage.id)
    ).scalars()
    return Cancelled(int(cast(CursorResult[Any], result).rowcount), list(in_flight))


def usable_channels(
    enrolled: frozenset[Channel],
    patient: Patient,
    consent: ConsentState,
    suppressed: frozenset[Channel],
) -> frozenset[Channel]:
    """The channels a plan may use now. A dead phone number falls back to email."""
    invalid = {
        c
        for c, at in (
            (Channel.SMS, patient.phone_invalid_at),
            (Channel.EMAIL, patient.email_invalid_at),
        )
        if at is not None
    }
    wanted = set(enrolled)
    if Channel.SMS in invalid and patient.email is not None:
        wanted.add(Channel.EMAIL)
    return frozenset(wanted & consent.programme) - suppressed - invalid


@dataclass(frozen=True)
class Stored:
    """What one plan puts in the database now."""

    rows: list[PlannedSend]  # pending sends due inside the horizon: outbox rows
    skips: list[PlannedSend]  # recorded on the enrollment, not as rows
    planned_until: datetime | None  # sends due from here on are not rows yet; None: all are


def split(planned: Sequence[PlannedSend], now: datetime, horizon: timedelta) -> Stored:
    """Outbox rows only for the next `horizon`; the rest stays in the (pure, repeatable) plan.

    Writing every future send at enrolment cost 27 rows a patient; a rolling horizon writes
    the few that can be due soon and extends itself (extend_plans) long before they run out.
    """
    end = now + horizon
    rows = [p for p in planned if p.status is MessageStatus.PENDING and p.due_at < end]
    later = any(p.status is MessageStatus.PENDING and p.due_at >= end for p in planned)
    skips = [p for p in planned if p.status is MessageStatus.SKIPPED]
    return Stored(rows, skips, end if later else None)


#: Skips as stored on the enrollment: (version, step, channel, reason, due as ISO 8601).
SkipRecords = tuple[tuple[int, str, str, str | None, str], ...]


def skip_records(skips: Sequence[PlannedSend], version: int) -> SkipRecords:
    return tuple((version, p.step.key, p.channel.value, p.reason, iso(p.due_at)) for p in skips)


@dataclass(frozen=True)
class Planner:
    catalog: Catalog
    window: SendWindow
    horizon: timedelta = timedelta(days=14)

    def plan(self, facts: PlanInput, campaign: str, now: datetime) -> list[PlannedSend]:
        return plan(facts, self.catalog[campaign], self.window, now)

    def facts(self, session: Session, enrollment: Enrollment, patient: Patient) -> PlanInput:
        """Everything planning needs, read from the database (sent steps, skips, consent)."""
        rows = session.execute(
            select(
                ScheduledMessage.step_key,
                ScheduledMessage.channel,
                ScheduledMessage.status,
                ScheduledMessage.due_at,
                ScheduledMessage.enrollment_id,
            )
            .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
            .where(Enrollment.patient_id == patient.id)
        ).all()
        tz = zone(patient.timezone)
        done: set[tuple[str, Channel]] = set()
        recorded = {(skip[1], Channel(skip[2])) for skip in enrollment.skipped}
        busy: set[date] = set()
        for step, channel, status, due_at, enrollment_id in rows:
            if status in NOT_SENT_FINAL:
                if enrollment_id == enrollment.id and status == MessageStatus.EXPIRED:
                    recorded.add((step, Channel(channel)))
                continue
            busy.add(due_at.astimezone(tz).date())
            if enrollment_id == enrollment.id:
                done.add((step, Channel(channel)))
        consent = consent_state(session, patient.id)
        channels = usable_channels(
            frozenset(Channel(c) for c in enrollment.channels.split(",")),
            patient,
            consent,
            suppressed_channels(session, patient),
        )
        return PlanInput(
            timezone=patient.timezone,
            edd=enrollment.edd,
            enrolled_on=enrollment.enrolled_on,
            channels=channels,
            marketing_channels=consent.marketing,
            birth_date=enrollment.birth_date,
            done=frozenset(done),
            recorded=frozenset(recorded),
            busy_days=frozenset(busy),
        )

    def plan_for(
        self, session: Session, enrollment: Enrollment, patient: Patient, now: datetime
    ) -> list[PlannedSend]:
        """The enrollment's remaining plan as of now (pure given the database state)."""
        return self.plan(self.facts(session, enrollment, patient), enrollment.campaign, now)

    def replan(
        self, session: Session, enrollment: Enrollment, patient: Patient, now: datetime
    ) -> list[PlannedSend]:
        """Plan the current schedule version and store it (the caller holds the lock).

        Also how a plan's horizon is extended: sends already written count as done, so only
        what is new is added.
        """
        planned = self.plan_for(session, enrollment, patient, now)
        stored = split(planned, now, self.horizon)
        write_plans(session, [(enrollment.id, enrollment.schedule_version, stored.rows)], now)
        if stored.skips:
            # A new list, so the ORM sees the change to the JSON column.
            enrollment.skipped = [
                *enrollment.skipped,
                *(list(r) for r in skip_records(stored.skips, enrollment.schedule_version)),
            ]
        enrollment.planned_until = stored.planned_until
        return planned


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


def write_plans(
    session: Session, plans: Sequence[tuple[int, int, Sequence[PlannedSend]]], now: datetime
) -> int:
    """Insert planned rows in bulk (COPY on PostgreSQL); returns how many.

    Patients enrolled together often share a plan (same due date, timezone and choices); the
    row text of each distinct plan is formatted once and reused with each enrollment's id.
    """
    table = ScheduledMessage
    if not is_postgres(session):
        rows = [
            (eid, *_values(p, version, now)) for eid, version, planned in plans for p in planned
        ]
        write_rows(session, table, PLAN_COLUMNS, rows)
        return len(rows)
    formatted: dict[tuple[int, int], list[str]] = {}
    stamp = iso(now)
    lines: list[str] = []
    for eid, version, planned in plans:
        key = (id(planned), version)
        tails = formatted.get(key)
        if tails is None:
            tails = formatted[key] = [_tail(p, version, stamp) for p in planned]
        prefix = str(eid)
        lines.extend([prefix + tail for tail in tails])
    copy_lines(session, table, PLAN_COLUMNS, lines)
    return len(lines)


def _tail(p: PlannedSend, version: int, stamp: str) -> str:
    """Everything after the enrollment id, in COPY text format. Keys and reasons are plain
    identifiers (the catalog checks step keys), so nothing here needs escaping."""
    due = iso(p.due_at)
    expires = iso(p.expires_at) if p.expires_at is not None else NULL
    return (
        f"\t{p.step.key}\t{p.channel.value}\t{p.step.kind.value}\t{version}"
        f"\t{p.status.value}\t{p.reason or NULL}\t{due}\t{due}\t{expires}\t0\t{stamp}\n"
    )


def _values(p: PlannedSend, version: int, now: datetime) -> tuple[Any, ...]:
    return (
        p.step.key,
        p.channel.value,
        p.step.kind.value,
        version,
        p.status.value,
        p.reason,
        p.due_at,
        p.due_at,
        p.expires_at,
        0,
        now,
    )
