"""Read models shared by the CLI and the staff UI: timelines, previews, the
backlog, and what each staff page shows (the pages never query the tables themselves)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from campaigns.delivery import NEEDS_REVIEW
from campaigns.planner import Planner
from campaigns.rules.broadcasts import Text, broadcast_id
from campaigns.rules.catalog import Campaign, Catalog
from campaigns.rules.consent import ConsentState
from campaigns.rules.contacts import mask_phone, normalise_phone
from campaigns.rules.content import ContentRenderer, Recipient
from campaigns.rules.errors import InputError, NotFoundError
from campaigns.rules.intake import parse_date
from campaigns.rules.planning import PlanInput, PlannedSend, plan
from campaigns.rules.replies import Severity
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus
from campaigns.rules.window import SendWindow, WindowError, zone
from campaigns.storage.broadcasts import texts_for_keys
from campaigns.storage.consents import state_of, suppressed_channels
from campaigns.storage.models import (
    Alert,
    AuditEvent,
    ConsentEvent,
    Enrollment,
    InboundMessage,
    Patient,
    PeriodicRun,
    ScheduledMessage,
)

SM = ScheduledMessage


@dataclass(frozen=True)
class TimelineEntry:
    id: int | None  # None: a skip record, or a send not yet written to the outbox
    enrollment_id: int
    step: str
    channel: str
    kind: str
    status: str  # a message status, or "planned" for a send beyond the written horizon
    reason: str | None
    version: int
    due_local: str
    due_utc: str
    sent_local: str | None
    attempts: int
    provider_id: str | None
    subject: str | None
    body: str | None
    #: The campaign version an outbox row renders from (None: see future_texts).
    content_version: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def find_patient(session: Session, phone_or_id: str) -> Patient:
    """A patient by id, or by phone number in any common format."""
    text = phone_or_id.strip()
    if text.isdigit() and len(text) < 9:
        patient = session.get(Patient, int(text))
    else:
        patient = session.execute(
            select(Patient).where(Patient.phone == normalise_phone(text))
        ).scalar_one_or_none()
    if patient is None:
        shown = text if text.isdigit() and len(text) < 9 else mask_phone(text)
        raise NotFoundError(f"no patient {shown}")
    return patient


def timeline(
    session: Session, patient: Patient, planner: Planner, now: datetime
) -> list[TimelineEntry]:
    """Everything about a patient's messages: outbox rows, recorded skips, and the rest of
    each active plan (computed now, exactly as it will be written when its time comes)."""
    tz = zone(patient.timezone)
    enrollments = (
        session.execute(
            select(Enrollment).where(Enrollment.patient_id == patient.id).order_by(Enrollment.id)
        )
        .scalars()
        .all()
    )
    rows = session.execute(select(SM).where(SM.enrollment_id.in_([e.id for e in enrollments])))
    entries = [_row_entry(r, tz) for r in rows.scalars()]
    for enrollment in enrollments:
        entries.extend(_skipped_entries(enrollment, planner, tz))
        if enrollment.status == EnrollmentStatus.ACTIVE and enrollment.planned_until is not None:
            entries.extend(
                _planned_entry(
                    enrollment,
                    p.step.key,
                    p.channel.value,
                    p.step.kind.value,
                    "planned",
                    p.reason,
                    enrollment.schedule_version,
                    p.due_at,
                    tz,
                )
                for p in planner.plan_for(session, enrollment, patient, now)
                if p.status is MessageStatus.PENDING and p.due_at >= enrollment.planned_until
            )
    return sorted(entries, key=lambda e: (e.due_utc, e.step, e.channel, e.id or 0))


def _row_entry(r: ScheduledMessage, tz: Any) -> TimelineEntry:
    return TimelineEntry(
        id=r.id,
        enrollment_id=r.enrollment_id,
        step=r.step_key,
        channel=r.channel,
        kind=r.kind,
        status=r.status,
        reason=r.reason,
        version=r.schedule_version,
        due_local=_local(r.due_at, tz),
        due_utc=r.due_at.isoformat(),
        sent_local=_local(r.sent_at, tz) if r.sent_at else None,
        attempts=r.attempts,
        provider_id=r.provider_id,
        content_version=r.content_version,
        subject=r.subject,
        body=r.body,
    )


def _skipped_entries(enrollment: Enrollment, planner: Planner, tz: Any) -> list[TimelineEntry]:
    """The skips recorded on the enrollment (they are not outbox rows)."""
    campaign = planner.catalog[enrollment.campaign]
    return [
        _planned_entry(
            enrollment,
            step,
            channel,
            campaign.step(step).kind.value,
            "skipped",
            reason,
            version,
            datetime.fromisoformat(due),
            tz,
        )
        for version, step, channel, reason, due in enrollment.skipped
    ]


def _planned_entry(
    enrollment: Enrollment,
    step: str,
    channel: str,
    kind: str,
    status: str,
    reason: str | None,
    version: int,
    due: datetime,
    tz: Any,
) -> TimelineEntry:
    return TimelineEntry(
        id=None,
        enrollment_id=enrollment.id,
        step=step,
        channel=channel,
        kind=kind,
        status=status,
        reason=reason,
        version=version,
        due_local=_local(due, tz),
        due_utc=due.isoformat(),
        sent_local=None,
        attempts=0,
        provider_id=None,
        subject=None,
        body=None,
    )


@dataclass(frozen=True)
class PreviewEntry:
    step: str
    channel: str
    kind: str
    status: str
    reason: str | None
    due_local: str
    due_utc: str
    subject: str | None
    text: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def preview(
    campaign: Campaign,
    window: SendWindow,
    renderer: ContentRenderer,
    *,
    edd: date,
    timezone: str,
    now: datetime,
    birth_date: date | None = None,
    marketing: bool = False,
    discreet: bool = False,
    version: int | None = None,
) -> list[PreviewEntry]:
    """The plan a hypothetical patient would get, with the text of every message (of content
    `version`: the campaign's live one)."""
    tz = zone(timezone)
    facts = PlanInput(
        timezone=timezone,
        edd=edd,
        enrolled_on=now.astimezone(tz).date(),
        channels=frozenset(Channel),
        birth_date=birth_date,
        marketing_channels=frozenset(Channel) if marketing else frozenset(),
    )
    planned = plan(facts, campaign, window, now)
    return [_preview_entry(p, campaign, renderer, tz, discreet, version) for p in planned]


def preview_request(
    catalog: Catalog,
    window: SendWindow,
    renderer: ContentRenderer,
    *,
    campaign: str,
    edd: str,
    timezone: str,
    enrolled: str,
    birth: str,
    marketing: bool,
    discreet: bool,
    now: datetime,
) -> list[PreviewEntry]:
    """Preview from what staff typed (CLI or form); InputError names any bad field."""
    try:
        zone(timezone)
    except WindowError as exc:
        raise InputError("tz", str(exc)) from None
    if campaign not in catalog:
        raise InputError("campaign", f"unknown campaign {campaign!r}")
    if enrolled:
        # As if enrolled at 09:00 local that day, at the start of a clinic.
        now = datetime.combine(parse_date(enrolled, "enrolled"), time(9), zone(timezone))
    return preview(
        catalog[campaign],
        window,
        renderer,
        edd=parse_date(edd, "edd"),
        timezone=timezone,
        now=now.astimezone(UTC),
        birth_date=parse_date(birth, "birth") if birth else None,
        marketing=marketing,
        discreet=discreet,
        version=catalog.version(campaign),
    )


def _preview_entry(
    p: PlannedSend,
    campaign: Campaign,
    renderer: ContentRenderer,
    tz: Any,
    discreet: bool,
    version: int | None,
) -> PreviewEntry:
    recipient = Recipient("Alex", "en", discreet)
    subject = None
    if p.channel is Channel.SMS:
        text = renderer.render_sms(campaign.key, p.step.key, recipient, version).body
    else:
        unsubscribe = "(unsubscribe link)"
        email = renderer.render_email(campaign.key, p.step.key, recipient, unsubscribe, version)
        subject, text = email.subject, email.text
    return PreviewEntry(
        step=p.step.key,
        channel=p.channel.value,
        kind=p.step.kind.value,
        status=p.status.value,
        reason=p.reason,
        due_local=p.due_at.astimezone(tz).isoformat(),
        due_utc=p.due_at.isoformat(),
        subject=subject,
        text=text,
    )


@dataclass(frozen=True)
class Backlog:
    by_status: dict[str, int]
    due_now: int
    oldest_due_seconds: float
    #: Unknown sends the reconciler could not settle: staff decide (`campaigns requeue --unknown`).
    unknown_for_staff: int = 0


def backlog(session: Session, now: datetime) -> Backlog:
    counts = dict(session.execute(select(SM.status, func.count()).group_by(SM.status)).all())
    due_now, oldest = session.execute(
        select(func.count(), func.min(SM.next_attempt_at)).where(
            SM.status == MessageStatus.PENDING.value, SM.next_attempt_at <= now
        )
    ).one()
    lag = (now - oldest).total_seconds() if oldest is not None else 0.0
    for_staff = 0
    if counts.get(MessageStatus.UNKNOWN):
        for_staff = session.execute(
            select(func.count()).where(
                SM.status == MessageStatus.UNKNOWN.value, SM.reason == NEEDS_REVIEW
            )
        ).scalar_one()
    return Backlog({str(k): int(v) for k, v in counts.items()}, int(due_now), lag, int(for_staff))


#: Provider outcomes that count against a provider on the ops page.
_ACCEPTED = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED})
_NOT_DELIVERED = frozenset({MessageStatus.UNDELIVERED, MessageStatus.BOUNCED})


@dataclass
class ProviderOutcomes:
    """What one provider did with one channel's sends over a recent stretch of time."""

    channel: str
    provider: str
    accepted: int = 0  # taken by the provider (and delivered, or not yet known)
    not_delivered: int = 0  # taken, then reported undelivered or bounced
    failed: int = 0  # refused, or gave up after retries
    unknown: int = 0  # the call's result is not known

    @property
    def total(self) -> int:
        return self.accepted + self.not_delivered + self.failed + self.unknown

    @property
    def error_ratio(self) -> float:
        return (self.total - self.accepted) / self.total if self.total else 0.0


def provider_outcomes(session: Session, since: datetime) -> list[ProviderOutcomes]:
    """Sends by channel and provider since `since`: those the provider took, by when they
    went (ix_scheduled_messages_sent_at), and those that did not go, by their last change
    (ix_scheduled_messages_status_id). Counts
    only."""
    went = session.execute(
        select(SM.channel, SM.provider, SM.status, func.count())
        .where(SM.sent_at.is_not(None), SM.sent_at >= since)
        .group_by(SM.channel, SM.provider, SM.status)
    ).all()
    not_gone = session.execute(
        select(SM.channel, SM.provider, SM.status, func.count())
        .where(
            SM.status.in_([MessageStatus.FAILED.value, MessageStatus.UNKNOWN.value]),
            SM.updated_at >= since,
            SM.sent_at.is_(None),
        )
        .group_by(SM.channel, SM.provider, SM.status)
    ).all()
    found: dict[tuple[str, str], ProviderOutcomes] = {}
    for channel, provider, status, count in [*went, *not_gone]:
        key = (str(channel), str(provider or "none"))
        outcome = found.setdefault(key, ProviderOutcomes(*key))
        state = MessageStatus(status)
        if state in _ACCEPTED:
            outcome.accepted += int(count)
        elif state in _NOT_DELIVERED:
            outcome.not_delivered += int(count)
        elif state is MessageStatus.UNKNOWN:
            outcome.unknown += int(count)
        else:
            outcome.failed += int(count)
    return [found[key] for key in sorted(found)]


@dataclass(frozen=True)
class JobRun:
    name: str
    started_at: datetime
    runner: str
    succeeded_at: datetime | None
    failed_at: datetime | None
    error: str | None


def job_runs(session: Session) -> list[JobRun]:
    """Each periodic job's last run as beat claimed it (which process, how it ended)."""
    rows = session.execute(select(PeriodicRun).order_by(PeriodicRun.name)).scalars()
    return [
        JobRun(r.name, r.started_at, r.runner, r.succeeded_at, r.failed_at, r.error) for r in rows
    ]


@dataclass(frozen=True)
class NotGone:
    """A message that did not go, as operators see it: ids and codes, no patient data."""

    id: int
    channel: str
    step: str
    provider: str | None
    error_code: str | None
    reason: str | None
    attempts: int
    updated_at: datetime
    status: str = ""

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["updated_at"] = self.updated_at.isoformat()
        return found


def not_gone(
    session: Session, status: MessageStatus, *, before: int | None, limit: int
) -> list[NotGone]:
    """Failed or unknown messages, newest id first, a keyset page below `before`
    (ix_scheduled_messages_status_id)."""
    query = select(
        SM.id,
        SM.channel,
        SM.step_key,
        SM.provider,
        SM.error_code,
        SM.reason,
        SM.attempts,
        SM.updated_at,
        SM.status,
    ).where(
        # A range, not `=`, so PostgreSQL keeps status in the index's order and reads only
        # the page's rows (docs/decisions.md, "Message log at 10 million rows").
        SM.status >= status.value,
        SM.status <= status.value,
    )
    if before is not None:
        query = query.where(SM.id < before)
    rows = session.execute(query.order_by(SM.id.desc()).limit(limit)).all()
    return [NotGone(*row[:-1], status=str(row[-1])) for row in rows]


def _local(instant: datetime | None, tz: Any) -> str:
    return instant.astimezone(tz).isoformat() if instant else ""


# -- the staff pages' reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    backlog: Backlog
    upcoming: list[tuple[ScheduledMessage, Patient]]  # empty for a role without patient data
    active: int


def dashboard(session: Session, now: datetime, *, with_patients: bool) -> Dashboard:
    upcoming: list[tuple[ScheduledMessage, Patient]] = []
    if with_patients:
        upcoming = [
            (message, patient)
            for message, patient in session.execute(
                select(SM, Patient)
                .join(Enrollment, Enrollment.id == SM.enrollment_id)
                .join(Patient, Patient.id == Enrollment.patient_id)
                .where(SM.status == MessageStatus.PENDING.value)
                .order_by(SM.next_attempt_at)
                .limit(12)
            )
        ]
    active = session.execute(
        select(func.count())
        .select_from(Enrollment)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE.value)
    ).scalar_one()
    return Dashboard(backlog(session, now), upcoming, int(active))


def patients(
    session: Session, search: str = "", limit: int = 200
) -> list[tuple[Patient, Enrollment | None]]:
    """Newest patients first (with each enrollment), matching name, number, email or
    clinic reference."""
    query = (
        select(Patient, Enrollment)
        .join(Enrollment, Enrollment.patient_id == Patient.id, isouter=True)
        .order_by(Patient.id.desc())
        .limit(limit)
    )
    if search.strip():
        like = f"%{search.strip()}%"
        query = query.where(
            or_(
                Patient.name.ilike(like),
                Patient.phone.ilike(like),
                Patient.email.ilike(like),
                Patient.clinic_ref.ilike(like),
            )
        )
    return [(patient, enrollment) for patient, enrollment in session.execute(query)]


@dataclass(frozen=True)
class PatientRecord:
    patient: Patient
    enrollments: list[Enrollment]
    timeline: list[TimelineEntry]
    suppressed: frozenset[Channel]
    received: list[InboundMessage]  # her texts, newest first
    ledger: list[ConsentEvent]  # oldest first
    consent: ConsentState  # today's, from the ledger above
    open_alerts: list[Alert] = field(default_factory=list)  # most urgent first, then oldest
    #: Acknowledged alerts, newest first, each with the note left when it was acknowledged.
    acknowledged: list[tuple[Alert, str]] = field(default_factory=list)
    #: The broadcasts on her timeline, by step key (their names and words).
    broadcasts: dict[str, Text] = field(default_factory=dict)

    @property
    def current(self) -> list[TimelineEntry]:
        """The timeline without the cancelled rows of earlier schedule versions."""
        return [e for e in self.timeline if not self._superseded(e)]

    @property
    def superseded(self) -> list[TimelineEntry]:
        """Cancelled rows of earlier schedule versions (a re-plan left them behind)."""
        return [e for e in self.timeline if self._superseded(e)]

    def _superseded(self, entry: TimelineEntry) -> bool:
        versions = {e.id: e.schedule_version for e in self.enrollments}
        if broadcast_id(entry.step) is not None:
            return False  # a broadcast is no part of a plan: it stays on the timeline
        return entry.status == MessageStatus.CANCELLED.value and entry.version < versions.get(
            entry.enrollment_id, entry.version
        )


def patient_record(
    session: Session, patient_id: int, planner: Planner, now: datetime
) -> PatientRecord | None:
    patient = session.get(Patient, patient_id)
    if patient is None:
        return None
    ledger = list(
        session.execute(
            select(ConsentEvent)
            .where(ConsentEvent.patient_id == patient.id)
            .order_by(ConsentEvent.id)
        ).scalars()
    )
    entries = timeline(session, patient, planner, now)
    return PatientRecord(
        patient=patient,
        enrollments=list(
            session.execute(
                select(Enrollment)
                .where(Enrollment.patient_id == patient.id)
                .order_by(Enrollment.id)
            ).scalars()
        ),
        timeline=entries,
        suppressed=suppressed_channels(session, patient),
        received=list(
            session.execute(
                select(InboundMessage)
                .where(InboundMessage.patient_id == patient.id)
                .order_by(InboundMessage.id.desc())
                .limit(50)
            ).scalars()
        ),
        ledger=ledger,
        consent=state_of(ledger),  # the ledger shown, read once
        open_alerts=list(
            session.execute(
                select(Alert)
                .where(Alert.patient_id == patient.id, Alert.acknowledged_at.is_(None))
                .order_by(_URGENCY, Alert.id)
            ).scalars()
        ),
        acknowledged=_acknowledged(session, patient.id),
        broadcasts=texts_for_keys(session.connection(), {e.step for e in entries}),
    )


def _acknowledged(session: Session, patient_id: int) -> list[tuple[Alert, str]]:
    """Her acknowledged alerts, newest first, with the note each was acknowledged with (kept
    in the audit trail's event, read through ix_audit_events_patient_id_id)."""
    found = list(
        session.execute(
            select(Alert)
            .where(Alert.patient_id == patient_id, Alert.acknowledged_at.is_not(None))
            .order_by(Alert.id.desc())
            .limit(50)
        ).scalars()
    )
    if not found:
        return []
    notes: dict[int, str] = {}
    for detail in session.execute(
        select(AuditEvent.detail).where(
            AuditEvent.patient_id == patient_id, AuditEvent.action == "alert_acknowledged"
        )
    ).scalars():
        if isinstance(detail, dict) and isinstance(detail.get("alert"), int):
            notes[detail["alert"]] = str(detail.get("note") or "")
    return [(alert, notes.get(alert.id, "")) for alert in found]


def future_texts(
    record: PatientRecord, renderer: ContentRenderer, catalog: Catalog
) -> dict[tuple[int, str, str], str]:
    """The text each message still to go will carry, as she will get it (her language and
    discreet wording), by (enrollment id, step, channel); emails by their subject. A row
    written to the outbox renders from its own version, a later send from the live one."""
    patient = record.patient
    recipient = Recipient(
        patient.name.split()[0] if patient.name else "", patient.language, patient.discreet
    )
    campaigns = {e.id: e.campaign for e in record.enrollments}
    texts: dict[tuple[int, str, str], str] = {}
    for entry in record.timeline:
        if entry.status not in _TO_GO or entry.enrollment_id not in campaigns:
            continue
        key = (entry.enrollment_id, entry.step, entry.channel)
        campaign = campaigns[entry.enrollment_id]
        said = record.broadcasts.get(entry.step)
        version = entry.content_version if entry.id is not None else catalog.version(campaign)
        if said is not None:  # a broadcast's own words, the same for everyone
            texts[key] = (said.sms if entry.channel == Channel.SMS.value else said.subject) or ""
        elif entry.body is not None:  # a staff reply: written with its row
            texts[key] = entry.body
        elif entry.channel == Channel.SMS.value:
            texts[key] = renderer.render_sms(campaign, entry.step, recipient, version).body
        else:
            texts[key] = renderer.render_email(
                campaign, entry.step, recipient, "(unsubscribe link)", version
            ).subject
    return texts


#: Timeline entries still to go: pending outbox rows and sends beyond the written horizon.
_TO_GO = frozenset({MessageStatus.PENDING.value, "planned"})
#: Most urgent first: Severity lists them in that order.
_URGENCY = case({s.value: rank for rank, s in enumerate(Severity)}, value=Alert.severity, else_=99)


def patient_of_enrollment(session: Session, enrollment_id: int) -> int | None:
    found = session.execute(
        select(Enrollment.patient_id).where(Enrollment.id == enrollment_id)
    ).scalar_one_or_none()
    return None if found is None else int(found)


def booking_campaign(session: Session, patient_id: int) -> tuple[bool, str | None]:
    """Whether the patient exists, and the campaign of her newest enrollment."""
    if session.get(Patient, patient_id) is None:
        return False, None
    campaign = session.execute(
        select(Enrollment.campaign)
        .where(Enrollment.patient_id == patient_id)
        .order_by(Enrollment.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return True, campaign
