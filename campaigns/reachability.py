"""Who can be reached on which channel, as providers tell us: opt-outs and dead addresses.

Each function runs inside a transaction that holds the patient's lock (FOR UPDATE), cancels
the sends that can no longer go, and leaves a record: a suppression plus a consent event for
an opt-out; the address marked invalid for a dead number or a hard bounce. A dead phone number
moves the patient's remaining messages to email when they have a usable address.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.planner import Planner
from campaigns.rules.consent import WORDING_VERSION
from campaigns.rules.contacts import address_hash
from campaigns.rules.vocabulary import Channel, ConsentPurpose, ConsentSource
from campaigns.scheduling import reschedule
from campaigns.storage.db import insert_if_absent
from campaigns.storage.models import ConsentEvent, Patient, Suppression
from campaigns.storage.patients import active_enrollments
from campaigns.storage.plans import cancel_channel


def address_of(patient: Patient, channel: Channel) -> str | None:
    return patient.phone if channel is Channel.SMS else patient.email


# Built once: a reply's hot path runs these statements with new values, not new statements.
_SMS_SUPPRESSED = (
    select(Suppression.id)
    .where(
        Suppression.channel == Channel.SMS.value,
        Suppression.address_hash == bindparam("hashed"),
    )
    .exists()
)
_SMS_LATEST_CONSENT = (
    select(ConsentEvent.granted)
    .where(
        ConsentEvent.patient_id == Patient.id,
        ConsentEvent.purpose == ConsentPurpose.PROGRAMME.value,
        (ConsentEvent.channel == Channel.SMS.value) | ConsentEvent.channel.is_(None),
    )
    .order_by(ConsentEvent.id.desc())
    .limit(1)
    .scalar_subquery()
)
_SMS_SENDER = (
    select(Patient, _SMS_SUPPRESSED, _SMS_LATEST_CONSENT)
    .where(Patient.phone == bindparam("phone"))
    .with_for_update(of=Patient)
    .execution_options(populate_existing=True)
)
_SMS_SUPPRESSED_ONLY = select(_SMS_SUPPRESSED)


def sms_sender(session: Session, sender: str) -> tuple[Patient | None, bool]:
    """The patient with this number, locked (FOR UPDATE), and whether the number has opted out
    of texts (suppressed, or the latest programme consent for SMS withdrawn), in one round
    trip."""
    hashed = address_hash(sender)
    row = session.execute(_SMS_SENDER, {"phone": sender, "hashed": hashed}).first()
    if row is None:
        return None, bool(session.execute(_SMS_SUPPRESSED_ONLY, {"hashed": hashed}).scalar())
    patient, is_suppressed, granted = row
    return patient, bool(is_suppressed) or granted is False


def suppress(
    session: Session,
    channel: Channel,
    address: str,
    now: datetime,
    *,
    source: ConsentSource,
    reason: str,
) -> None:
    """Keep the address (by hash) from ever being messaged on the channel; no-op if it is."""
    insert_if_absent(
        session,
        Suppression,
        channel=channel.value,
        address_hash=address_hash(address),
        reason=reason,
        source=source.value,
        created_at=now,
    )


def lift_suppression(session: Session, channel: Channel, address: str) -> None:
    session.execute(
        delete(Suppression).where(
            Suppression.channel == channel.value,
            Suppression.address_hash == address_hash(address),
        )
    )


def opt_out(
    session: Session,
    patient: Patient,
    channel: Channel,
    now: datetime,
    *,
    source: ConsentSource,
    reason: str,
    actor: str,
    wording: str | None = None,
) -> int:
    """Never message this address on this channel again (until a new opt-in). `wording`: the
    words the patient was told, when staff recorded the withdrawal."""
    address = address_of(patient, channel)
    if address is not None:
        suppress(session, channel, address, now, source=source, reason=reason)
    session.add(
        ConsentEvent(
            patient_id=patient.id,
            purpose=ConsentPurpose.PROGRAMME.value,
            channel=channel.value,
            granted=False,
            occurred_at=now,
            source=source.value,
            wording_version=WORDING_VERSION,
            actor=actor,
            wording=wording,
        )
    )
    cancelled = cancel_channel(session, patient.id, channel, "opted_out", now)
    audit.record(
        session,
        now,
        actor,
        "opted_out",
        patient_id=patient.id,
        channel=channel.value,
        reason=reason,
        cancelled=cancelled.count,
        in_flight=cancelled.in_flight,
    )
    return cancelled.count


def opt_in(
    session: Session,
    planner: Planner,
    patient: Patient,
    channel: Channel,
    now: datetime,
    *,
    source: ConsentSource,
    actor: str,
    replan: bool,
    wording: str | None = None,
) -> None:
    """Messages on this channel again: the suppression lifted, a consent event granted, and,
    when `replan` (the patient had opted out), each active plan made again from now."""
    address = address_of(patient, channel)
    if address is not None:
        lift_suppression(session, channel, address)
    session.add(
        ConsentEvent(
            patient_id=patient.id,
            purpose=ConsentPurpose.PROGRAMME.value,
            channel=channel.value,
            granted=True,
            occurred_at=now,
            source=source.value,
            wording_version=WORDING_VERSION,
            actor=actor,
            wording=wording,
        )
    )
    session.flush()
    audit.record(session, now, actor, "resubscribed", patient_id=patient.id, channel=channel.value)
    if replan:
        for enrollment in active_enrollments(session, patient.id):
            # Steps the opt-out cancelled are planned again from now (missed ones skipped).
            reschedule(session, planner, enrollment, patient, now, "resubscribed")


def mark_invalid(
    session: Session,
    planner: Planner,
    patient: Patient,
    channel: Channel,
    now: datetime,
    *,
    reason: str,
    actor: str,
) -> int:
    """The address cannot receive: stop using it, and re-plan (SMS falls back to email)."""
    if channel is Channel.SMS:
        if patient.phone_invalid_at is not None:
            return 0
        patient.phone_invalid_at, patient.phone_invalid_reason = now, reason
    else:
        if patient.email_invalid_at is not None:
            return 0
        patient.email_invalid_at, patient.email_invalid_reason = now, reason
    cancelled = cancel_channel(session, patient.id, channel, "invalid_address", now)
    for enrollment in active_enrollments(session, patient.id):
        # A new schedule version with the channels that still work (email instead of SMS).
        reschedule(session, planner, enrollment, patient, now, "address_changed")
    audit.record(
        session,
        now,
        actor,
        "address_invalid",
        patient_id=patient.id,
        channel=channel.value,
        reason=reason,
        cancelled=cancelled.count,
        in_flight=cancelled.in_flight,
    )
    return cancelled.count
