"""Alerts for staff: raised by replies, acknowledged in the staff inbox, RED/AMBER emailed.

The email is sent by the beat sweep (`email_pending`), never inside the webhook: a provider
call must not hold up the patient's safety answer, and an alert whose email failed is tried
again on the next sweep until it goes. The email names the severity and links to the inbox;
it carries neither the patient's text nor their contact details, and nothing of the message
in its subject.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, case, func, insert, or_, select, update
from sqlalchemy.orm import Session

from campaigns import audit, metrics
from campaigns.rules.errors import NotFoundError, StateError
from campaigns.rules.keywords import Intent
from campaigns.rules.ports import EmailSender, OutgoingEmail, ProviderError
from campaigns.rules.replies import BOOK_AFTER_SAFETY, AlertSpec, Severity
from campaigns.storage.db import Database
from campaigns.storage.models import Alert, InboundMessage, Patient

log = logging.getLogger(__name__)
#: A claimed alert email not confirmed sent after this is tried again (the sender died).
EMAIL_CLAIM_TIMEOUT = timedelta(minutes=5)
RECENT_SAFETY = timedelta(hours=24)
_INSERT = insert(Alert).returning(Alert.id)


def raise_alert(
    session: Session,
    spec: AlertSpec,
    now: datetime,
    *,
    patient_id: int | None,
    inbound_id: int | None,
    matched: Sequence[str],
    **detail: Any,
) -> int:
    alert_id: int = (
        session.connection()
        .execute(
            _INSERT,
            {
                "patient_id": patient_id,
                "inbound_id": inbound_id,
                "severity": spec.severity.value,
                "kind": spec.kind,
                "matched": list(matched),
                "safety_reply": spec.safety_reply,
                "detail": detail,
                "created_at": now,
                "email_due": spec.severity.emailed,
            },
        )
        .scalar_one()
    )
    audit.record(
        session,
        now,
        "system",
        "alert_raised",
        patient_id=patient_id,
        alert=alert_id,
        severity=spec.severity.value,
        kind=spec.kind,
    )
    metrics.ALERTS_RAISED.labels(spec.severity.value).inc()
    return alert_id


def recent_safety_reply(session: Session, patient_id: int, now: datetime) -> str | None:
    """The safety answer of a RED or AMBER alert raised for this patient in the last 24 hours."""
    return session.execute(
        select(Alert.safety_reply)
        .where(
            Alert.patient_id == patient_id,
            Alert.severity.in_([Severity.RED.value, Severity.AMBER.value]),
            Alert.safety_reply.is_not(None),
            Alert.kind != BOOK_AFTER_SAFETY,  # asking to book is not a new danger sign
            Alert.created_at > now - RECENT_SAFETY,
        )
        .order_by(Alert.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def acknowledge(db: Database, alert_id: int, now: datetime, *, actor: str, note: str = "") -> Alert:
    with db.session() as session:
        alert = session.execute(
            select(Alert).where(Alert.id == alert_id).with_for_update()
        ).scalar_one_or_none()
        if alert is None:
            raise NotFoundError(f"no alert {alert_id}")
        if alert.kind == Intent.LOSS.value and alert.acknowledged_at is None:
            # A loss alert holds the patient's messages: closing it without a decision would
            # leave them held with nothing to show it (campaigns.loss_review decides it).
            raise StateError(
                f"alert {alert_id} is a loss waiting for a decision: confirm the loss or "
                "clear the hold"
            )
        mark_acknowledged(session, alert, now, actor=actor, note=note)
        session.flush()
        session.expunge(alert)
        return alert


def mark_acknowledged(
    session: Session, alert: Alert, now: datetime, *, actor: str, note: str = ""
) -> None:
    """In the caller's transaction, holding the alert's row lock: who acknowledged it, when."""
    if alert.acknowledged_at is not None:
        raise StateError(f"alert {alert.id} was already acknowledged by {alert.acknowledged_by}")
    alert.acknowledged_at, alert.acknowledged_by = now, actor
    metrics.ALERT_ACK_SECONDS.labels(str(alert.severity)).observe(
        max(0.0, (now - alert.created_at).total_seconds())
    )
    audit.record(
        session,
        now,
        actor,
        "alert_acknowledged",
        patient_id=alert.patient_id,
        alert=alert.id,
        minutes_open=round((now - alert.created_at).total_seconds() / 60, 1),
        note=note[:200],
    )


@dataclass(frozen=True)
class OpenCounts:
    by_severity: dict[str, int]
    oldest: datetime | None
    #: The oldest unacknowledged alert of each severity (None: none open).
    oldest_by_severity: dict[str, datetime | None]


def open_counts(session: Session) -> OpenCounts:
    rows = session.execute(
        select(Alert.severity, func.count(), func.min(Alert.created_at))
        .where(Alert.acknowledged_at.is_(None))
        .group_by(Alert.severity)
    ).all()
    counts = {severity.value: 0 for severity in Severity}
    firsts: dict[str, datetime | None] = {severity.value: None for severity in Severity}
    for severity, count, first in rows:
        counts[severity] = int(count)
        firsts[severity] = first
    oldest = min((first for first in firsts.values() if first is not None), default=None)
    return OpenCounts(counts, oldest, firsts)


def email_pending(
    db: Database,
    sender: EmailSender,
    address: str | None,
    public_url: str,
    clinic_name: str,
    now: datetime,
    limit: int = 50,
) -> int:
    """Email RED/AMBER alerts not yet emailed to the clinic's alert address; returns how many."""
    if not address:
        return 0
    claimable = (
        Alert.email_due,
        Alert.emailed_at.is_(None),
        or_(
            Alert.email_claimed_at.is_(None),
            Alert.email_claimed_at < now - EMAIL_CLAIM_TIMEOUT,
        ),
    )
    with db.session() as session:
        # Claim first, so two sweeps never email the same alert; the outer conditions are
        # checked again on the locked row. A claim left by a dead sweep expires.
        claimed = session.execute(
            update(Alert)
            .where(
                Alert.id.in_(
                    select(Alert.id)
                    .where(*claimable)
                    .order_by(Alert.id)
                    .limit(limit)
                    .scalar_subquery()
                ),
                *claimable,
            )
            .values(email_claimed_at=now)
            .returning(Alert.id, Alert.severity, Alert.kind, Alert.created_at)
        ).all()
    sent = 0
    for alert_id, severity, kind, created_at in claimed:
        email = _alert_email(alert_id, severity, kind, created_at, address, public_url, clinic_name)
        try:
            sender.send_email(email)
        except ProviderError as exc:
            log.error(
                "ALERT email for alert %d failed (%s); tried again next sweep",
                alert_id,
                exc,
                extra={"event": "alerts.alert_email_alert_failed"},
            )
            with db.session() as session:
                session.execute(
                    update(Alert).where(Alert.id == alert_id).values(email_claimed_at=None)
                )
            continue
        with db.session() as session:
            result = session.execute(
                update(Alert).where(Alert.id == alert_id).values(emailed_at=now)
            )
            sent += int(cast(CursorResult[Any], result).rowcount)
    return sent


def _alert_email(
    alert_id: int,
    severity: str,
    kind: str,
    created_at: datetime,
    address: str,
    public_url: str,
    clinic_name: str,
) -> OutgoingEmail:
    link = f"{public_url.rstrip('/')}/staff/alerts/{alert_id}"
    what = kind.replace("_", " ")
    text = (
        f"A patient's reply needs attention ({severity.upper()}: {what}).\n\n"
        f"Raised at {created_at:%Y-%m-%d %H:%M} UTC. The patient has had the safety answer.\n"
        f"Open the alert and acknowledge it: {link}\n\n"
        "The text and the patient's details are in the staff inbox, not in this email.\n"
    )
    html = (
        f"<p>A patient's reply needs attention (<strong>{severity.upper()}</strong>: {what}).</p>"
        f"<p>Raised at {created_at:%Y-%m-%d %H:%M} UTC. The patient has had the safety answer.</p>"
        f'<p><a href="{link}">Open the alert and acknowledge it</a></p>'
        "<p>The text and the patient's details are in the staff inbox, not in this email.</p>"
    )
    return OutgoingEmail(
        message_id=0,  # not an outbox row: provider events for it match nothing
        to=address,
        subject=f"[{severity.upper()}] {clinic_name} alert #{alert_id}: please check the inbox",
        html=html,
        text=text,
        category="staff-alert",
        unsubscribe_url=link,
    )


# -- the staff inbox's reads ------------------------------------------------------------------


def inbox(session: Session, *, everything: bool, limit: int = 300) -> list[Any]:
    """Open alerts, most urgent first then oldest (or every alert, newest first), each with
    its patient and the text that raised it."""
    query = (
        select(Alert, Patient, InboundMessage)
        .join(Patient, Patient.id == Alert.patient_id, isouter=True)
        .join(InboundMessage, InboundMessage.id == Alert.inbound_id, isouter=True)
        .limit(limit)
    )
    if everything:
        query = query.order_by(Alert.id.desc())
    else:
        query = query.where(Alert.acknowledged_at.is_(None)).order_by(_URGENCY, Alert.id)
    return list(session.execute(query).all())


@dataclass(frozen=True)
class AlertRecord:
    alert: Alert
    patient: Patient | None
    message: InboundMessage | None


def alert_record(session: Session, alert_id: int) -> AlertRecord | None:
    alert = session.get(Alert, alert_id)
    if alert is None:
        return None
    patient = session.get(Patient, alert.patient_id) if alert.patient_id else None
    message = session.get(InboundMessage, alert.inbound_id) if alert.inbound_id else None
    return AlertRecord(alert, patient, message)


#: Most urgent first: Severity lists them in that order.
_URGENCY = case({s.value: rank for rank, s in enumerate(Severity)}, value=Alert.severity, else_=99)
