"""Staff changing a patient's record: her contact details, time zone, language, discreet
wording and channels; and consent she gave or withdrew by phone or in person.

Each change is one transaction under the patient's lock (as every change that can stop or
move a send), so the send path's go-ahead sees it before any further provider call:

- a change to when or how messages go (time zone, channels, mobile number, email address)
  re-plans every active programme from now: what is pending is cancelled and planned again
  (sent steps are never repeated); language and discreet wording need no new plan, as each
  message is rendered when it is sent;
- a new mobile number or email address is a new address: a provider's earlier "cannot
  receive" for the old one no longer applies (a suppression stays with the old address);
- a programme consent withdrawn takes the STOP path (campaigns.reachability.opt_out: the
  address suppressed, pending sends on the channel cancelled at once); given back, the
  suppression is lifted and the programmes are planned again from now.

The audit trail names the fields that changed, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaigns import audit, reachability
from campaigns.enrollments import ENDABLE
from campaigns.planner import Planner
from campaigns.rules.clock import Clock
from campaigns.rules.consent import WORDING_VERSION
from campaigns.rules.contacts import (
    check_language,
    check_timezone,
    normalise_email,
    normalise_phone,
)
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.planning import PlannedSend
from campaigns.rules.vocabulary import (
    MARKETING_PURPOSE,
    Channel,
    ConsentPurpose,
    ConsentSource,
    MessageStatus,
)
from campaigns.scheduling import reschedule
from campaigns.storage.db import Database
from campaigns.storage.models import ConsentEvent, Enrollment, Patient
from campaigns.storage.patients import active_enrollments, lock_patient, phone_owner
from campaigns.storage.plans import cancel_plan

#: The fields staff may edit, in the order the form shows them.
FIELDS = ("name", "phone", "email", "clinic_ref", "timezone", "language", "discreet", "channels")
#: Changes to these change when or how messages go: the active plans are made again.
REPLANNED = frozenset({"phone", "email", "timezone", "channels"})
#: How staff heard the patient's consent.
CONSENT_SOURCES = (ConsentSource.PHONE, ConsentSource.IN_PERSON)
MAX_WORDING = 2000


@dataclass(frozen=True)
class Details:
    """A patient's editable details, checked."""

    name: str
    phone: str | None
    email: str | None
    clinic_ref: str | None
    timezone: str
    language: str
    discreet: bool
    channels: frozenset[Channel]


def parse_details(fields: Mapping[str, str | None], phone_region: str) -> Details:
    """Check what staff typed on the edit form; InputError names the first wrong field."""

    def text(name: str) -> str:
        return (fields.get(name) or "").strip()

    name = text("name")
    if not name:
        raise InputError("name", "Enter her full name")
    if len(name) > 200:
        raise InputError("name", "Full name must be 200 characters or fewer")
    phone = email = None
    if text("phone"):
        try:
            phone = normalise_phone(text("phone"), phone_region)
        except InputError:
            raise InputError(
                "phone", "Enter a mobile number that can get texts, like 07700 900123"
            ) from None
    if text("email"):
        try:
            email = normalise_email(text("email"))
        except InputError:
            raise InputError(
                "email", "Enter an email address in the right format, like name@example.com"
            ) from None
    clinic_ref = text("clinic_ref") or None
    if clinic_ref is not None and len(clinic_ref) > 64:
        raise InputError("clinic_ref", "Clinic reference must be 64 characters or fewer")
    try:
        timezone = check_timezone(text("timezone"), field="timezone")
    except InputError:
        raise InputError(
            "timezone", "Enter a time zone by its place name, like Europe/London"
        ) from None
    try:
        language = check_language(text("language") or "en")
    except InputError:
        raise InputError("language", "Enter a language code, like en or pl") from None
    channels = set()
    for part in filter(None, (p.strip().lower() for p in text("channels").split(","))):
        try:
            channels.add(Channel(part))
        except ValueError:
            raise InputError("channels", "Choose text message, email or both") from None
    if not channels:
        raise InputError("channels", "Choose how to send her tips: text message, email or both")
    if Channel.SMS in channels and phone is None:
        raise InputError("phone", "Enter a mobile number, or untick Text message")
    if Channel.EMAIL in channels and email is None:
        raise InputError("email", "Enter an email address, or untick Email")
    return Details(
        name=name,
        phone=phone,
        email=email,
        clinic_ref=clinic_ref,
        timezone=timezone,
        language=language,
        discreet=text("discreet").lower() in {"1", "true", "yes", "on", "y"},
        channels=frozenset(channels),
    )


def editable(session: Session, patient_id: int) -> dict[str, str] | None:
    """The edit form's values as the record has them now (None: no such patient)."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        return None
    newest = session.execute(
        select(Enrollment.channels)
        .where(Enrollment.patient_id == patient_id)
        .order_by(Enrollment.status.in_(ENDABLE).desc(), Enrollment.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return {
        "name": patient.name,
        "phone": patient.phone or "",
        "email": patient.email or "",
        "clinic_ref": patient.clinic_ref or "",
        "timezone": patient.timezone,
        "language": patient.language,
        "discreet": "yes" if patient.discreet else "",
        "channels": newest or "",
    }


@dataclass(frozen=True)
class Edited:
    changed: list[str]  # the fields that changed (FIELDS' names), in form order
    cancelled: int  # pending sends cancelled by the re-plan
    planned: int  # pending sends in the new plans


def edit_details(
    db: Database,
    planner: Planner,
    patient_id: int,
    details: Details,
    now: datetime,
    *,
    actor: str,
) -> Edited:
    """Save the patient's details; re-plan from now if when or how messages go changed."""
    try:
        with db.session() as session:
            return _edit(session, planner, patient_id, details, now, actor)
    except IntegrityError:
        # Another patient took the number between our check and the commit.
        raise InputError("phone", "This mobile number belongs to another patient") from None


def _edit(
    session: Session,
    planner: Planner,
    patient_id: int,
    details: Details,
    now: datetime,
    actor: str,
) -> Edited:
    patient = lock_patient(session, patient_id)
    if patient.erased_at is not None:
        raise StateError("Her details were erased on request: there is nothing to edit")
    if details.phone is not None and details.phone != patient.phone:
        owner = phone_owner(session, details.phone)
        if owner is not None and owner != patient.id:
            raise InputError("phone", "This mobile number belongs to another patient")
    changed: list[str] = []
    for field in ("name", "clinic_ref", "timezone", "language", "discreet", "phone"):
        if getattr(patient, field) != getattr(details, field):
            setattr(patient, field, getattr(details, field))
            changed.append(field)
    if "phone" in changed:
        # A new number: what a provider said of the old one no longer applies.
        patient.phone_invalid_at = patient.phone_invalid_reason = None
    if _address_changed(patient.email, details.email):
        patient.email = details.email
        # Only a new address clears a bounce: the same one (in any case) would bounce again.
        patient.email_invalid_at = patient.email_invalid_reason = None
        changed.append("email")
    chosen = ",".join(sorted(details.channels))
    live = active_enrollments(session, patient.id, ENDABLE)
    if any(e.channels != chosen for e in live):
        for each in live:
            each.channels, each.updated_at = chosen, now
        changed.append("channels")
    changed.sort(key=FIELDS.index)
    if not changed:
        return Edited([], 0, 0)
    session.flush()  # the new number meets the unique index here, inside our error handling
    cancelled = planned = 0
    replanned = REPLANNED.intersection(changed)
    if replanned:
        for each in active_enrollments(session, patient.id):
            cancelled += cancel_plan(session, [each.id], "details_changed", now).count
            planned += _pending(reschedule(session, planner, each, patient, now, "details_changed"))
    audit.record(
        session,
        now,
        actor,
        "patient_edited",
        patient_id=patient.id,
        fields=changed,
        replanned=bool(replanned),
        cancelled=cancelled,
    )
    return Edited(changed, cancelled, planned)


def _address_changed(old: str | None, new: str | None) -> bool:
    if old is None or new is None:
        return old != new
    return old.casefold() != new.casefold()


def _pending(plan: Sequence[PlannedSend]) -> int:
    return sum(1 for p in plan if p.status is MessageStatus.PENDING)


@dataclass(frozen=True)
class ConsentChange:
    """Consent as staff heard it: what for, on which channel (None: every channel), given or
    withdrawn, how, and the words the patient was told."""

    purpose: ConsentPurpose
    channel: Channel | None
    granted: bool
    source: ConsentSource
    wording: str


def parse_consent(fields: Mapping[str, str | None]) -> ConsentChange:
    def text(name: str) -> str:
        return (fields.get(name) or "").strip()

    try:
        purpose = ConsentPurpose(text("purpose"))
    except ValueError:
        raise InputError("purpose", "Choose what the consent is for") from None
    channel: Channel | None = None
    if text("channel") not in ("", "all"):
        try:
            channel = Channel(text("channel"))
        except ValueError:
            raise InputError("channel", "Choose text message, email or both") from None
    if purpose is not ConsentPurpose.PROGRAMME:
        own = next(c for c, p in MARKETING_PURPOSE.items() if p is purpose)
        if channel not in (None, own):
            raise InputError(
                "channel", f"Offers by {_channel_words(own)} can only be on that channel"
            )
        channel = own
    if text("change") not in ("granted", "withdrawn"):
        raise InputError("change", "Choose whether she gave or withdrew her consent")
    source = next((s for s in CONSENT_SOURCES if s.value == text("source")), None)
    if source is None:
        raise InputError("source", "Choose how she told you: by phone or in person")
    wording = text("wording")
    if not wording:
        raise InputError("wording", "Enter the words you read or showed to her")
    if len(wording) > MAX_WORDING:
        raise InputError("wording", f"The words must be {MAX_WORDING} characters or fewer")
    return ConsentChange(purpose, channel, text("change") == "granted", source, wording)


def _channel_words(channel: Channel) -> str:
    return "text message" if channel is Channel.SMS else "email"


@dataclass(frozen=True)
class ConsentRecorded:
    cancelled: int  # sends stopped by a withdrawal
    planned: int  # pending sends in the plans made again


def record_consent(
    db: Database,
    planner: Planner,
    patient_id: int,
    change: ConsentChange,
    now: datetime,
    *,
    actor: str,
) -> ConsentRecorded:
    """Append the consent to the ledger with the signed-in member as its actor; a withdrawal
    stops sends at once, a consent given back plans the programmes again from now."""
    with db.session() as session:
        patient = lock_patient(session, patient_id)
        if patient.erased_at is not None:
            raise StateError("Her details were erased on request: no consent can be recorded")
        cancelled = 0
        if change.purpose is ConsentPurpose.PROGRAMME:
            channels = [change.channel] if change.channel is not None else list(Channel)
            for channel in channels:
                if change.granted:
                    reachability.opt_in(
                        session,
                        planner,
                        patient,
                        channel,
                        now,
                        source=change.source,
                        actor=actor,
                        replan=False,
                        wording=change.wording,
                    )
                else:
                    cancelled += reachability.opt_out(
                        session,
                        patient,
                        channel,
                        now,
                        source=change.source,
                        reason="withdrawn_to_staff",
                        actor=actor,
                        wording=change.wording,
                    )
        else:
            session.add(
                ConsentEvent(
                    patient_id=patient.id,
                    purpose=change.purpose.value,
                    channel=change.channel.value if change.channel else None,
                    granted=change.granted,
                    occurred_at=now,
                    source=change.source.value,
                    wording_version=WORDING_VERSION,
                    actor=actor,
                    wording=change.wording,
                )
            )
            session.flush()
        planned = 0
        if change.granted or change.purpose is not ConsentPurpose.PROGRAMME:
            # Consent given back (or marketing changed either way): plans made again from now
            # with the ledger as it is now; a marketing withdrawal cancels its pending offers.
            for each in active_enrollments(session, patient.id):
                if not change.granted:
                    cancelled += cancel_plan(session, [each.id], "consent_changed", now).count
                planned += _pending(
                    reschedule(session, planner, each, patient, now, "consent_changed")
                )
        audit.record(
            session,
            now,
            actor,
            "consent_recorded",
            patient_id=patient.id,
            purpose=change.purpose.value,
            channel=change.channel.value if change.channel else None,
            granted=change.granted,
            source=change.source.value,
        )
        return ConsentRecorded(max(cancelled, 0), planned)


@dataclass(frozen=True)
class PatientEdits:
    """Staff changes to a patient's record, on the clock (the staff UI calls these)."""

    db: Database
    planner: Planner
    clock: Clock

    def edit(self, patient_id: int, details: Details, *, actor: str) -> Edited:
        return edit_details(
            self.db, self.planner, patient_id, details, self.clock.now(), actor=actor
        )

    def consent(self, patient_id: int, change: ConsentChange, *, actor: str) -> ConsentRecorded:
        return record_consent(
            self.db, self.planner, patient_id, change, self.clock.now(), actor=actor
        )
