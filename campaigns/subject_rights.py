"""A patient's data protection rights: subject access (`export`) and erasure (`erase`).

`export` gathers everything held about her, as JSON-ready data: her patient row, consent
ledger, enrollments, outbox messages (with the text sent), their provider events, her texts to
us, alerts about her, the audit rows about her, and the suppressions kept for her addresses.

`erase` (docs/decisions.md, "Erasure") removes her contact details and every text, and makes
sure nothing is sent to her again, in one transaction under her patient lock:

- every send not yet handed to a provider is cancelled, every live enrollment ended
  (`stopped`, reason `erased`), so no tick, horizon extension or resume sends her anything;
- her phone and email are kept only as suppressions (SHA-256 hashes): a later enrolment or
  reply from the same address is never messaged (the planner and the send path check them);
- name, phone, email and clinic reference go from the patient row (the row stays, marked
  `erased_at`, so the ledger and audit still refer to something); outbox bodies and subjects,
  her texts' bodies, senders and matched words, our replies' texts, and alerts' matched words
  are removed; any other copy of her name, phone or email in the ledger, audit, alert or
  provider event details is replaced by a placeholder;
- the consent ledger and the audit trail stay, as anonymised evidence of what was consented to
  and done, and when.

Both write an audit row (`subject_access_exported`, `erased`) with counts, never contents;
nothing here logs a phone number, email address or text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.orm import Session

from campaigns import audit, reachability
from campaigns.enrollments import ENDABLE
from campaigns.rules.contacts import address_hash
from campaigns.rules.errors import NotFoundError
from campaigns.rules.vocabulary import Channel, ConsentSource, EnrollmentStatus
from campaigns.storage.db import Database
from campaigns.storage.models import (
    Alert,
    AuditEvent,
    Base,
    ConsentEvent,
    Conversation,
    Enrollment,
    InboundMessage,
    Patient,
    ProviderEvent,
    ScheduledMessage,
    Suppression,
)
from campaigns.storage.patients import active_enrollments, lock_patient
from campaigns.storage.plans import cancel_live

log = logging.getLogger(__name__)
#: What stands where her details were.
ERASED = "[erased]"
REASON = "erased"


def jsonable(value: Any) -> Any:
    """A column's value as JSON: datetimes in UTC ISO 8601, dates ISO, enums by value."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def as_dict(row: Base) -> dict[str, Any]:
    return {c.key: jsonable(getattr(row, c.key)) for c in row.__mapper__.column_attrs}


@dataclass(frozen=True)
class Held:
    """The rows held about one patient."""

    patient: Patient
    consents: Sequence[ConsentEvent]
    enrollments: Sequence[Enrollment]
    messages: Sequence[ScheduledMessage]
    provider_events: Sequence[ProviderEvent]
    inbound: Sequence[InboundMessage]
    alerts: Sequence[Alert]
    audit: Sequence[AuditEvent]
    suppressions: Sequence[Suppression]

    def counts(self) -> dict[str, int]:
        return {
            "consent_events": len(self.consents),
            "enrollments": len(self.enrollments),
            "messages": len(self.messages),
            "provider_events": len(self.provider_events),
            "inbound_messages": len(self.inbound),
            "alerts": len(self.alerts),
            "audit_events": len(self.audit),
            "suppressions": len(self.suppressions),
        }


def _rows(session: Session, model: type[Any], *where: Any) -> Sequence[Any]:
    return session.execute(select(model).where(*where).order_by(model.id)).scalars().all()


def held(session: Session, patient: Patient) -> Held:
    """Everything held about her, read in the caller's transaction."""
    enrollments = _rows(session, Enrollment, Enrollment.patient_id == patient.id)
    enrollment_ids = [e.id for e in enrollments]
    messages = _rows(session, ScheduledMessage, ScheduledMessage.enrollment_id.in_(enrollment_ids))
    message_ids = [m.id for m in messages]
    mine = [InboundMessage.patient_id == patient.id]
    if patient.phone:  # texts from her number stored before it was known to be hers
        mine.append(InboundMessage.sender == patient.phone)
    inbound = _rows(session, InboundMessage, or_(*mine))
    hashes = [address_hash(a) for a in (patient.phone, patient.email) if a]
    return Held(
        patient=patient,
        consents=_rows(session, ConsentEvent, ConsentEvent.patient_id == patient.id),
        enrollments=enrollments,
        messages=messages,
        provider_events=_rows(session, ProviderEvent, ProviderEvent.message_id.in_(message_ids)),
        inbound=inbound,
        alerts=_rows(
            session,
            Alert,
            or_(Alert.patient_id == patient.id, Alert.inbound_id.in_([i.id for i in inbound])),
        ),
        audit=_rows(
            session,
            AuditEvent,
            or_(
                AuditEvent.patient_id == patient.id,
                AuditEvent.enrollment_id.in_(enrollment_ids),
                AuditEvent.message_id.in_(message_ids),
            ),
        ),
        suppressions=_rows(session, Suppression, Suppression.address_hash.in_(hashes)),
    )


def require_patient(db: Database, patient_id: int) -> None:
    """Raise NotFoundError unless the patient exists."""
    with db.session() as session:
        if session.get(Patient, patient_id) is None:
            raise NotFoundError(f"no patient {patient_id}")


def export(db: Database, patient_id: int, now: datetime, *, actor: str) -> dict[str, Any]:
    """Everything held about the patient, as JSON-ready data (subject access); audited."""
    with db.session() as session:
        patient = lock_patient(session, patient_id)  # NotFoundError for an unknown id
        found = held(session, patient)
        document = {
            "exported_at": jsonable(now),
            "patient": as_dict(patient),
            "consent_events": [as_dict(r) for r in found.consents],
            "enrollments": [as_dict(r) for r in found.enrollments],
            "messages": [as_dict(r) for r in found.messages],
            "provider_events": [as_dict(r) for r in found.provider_events],
            "inbound_messages": [as_dict(r) for r in found.inbound],
            "alerts": [as_dict(r) for r in found.alerts],
            "audit_events": [as_dict(r) for r in found.audit],
            "suppressions": [
                {k: v for k, v in as_dict(r).items() if k != "address_hash"}
                for r in found.suppressions
            ],
        }
        audit.record(
            session, now, actor, "subject_access_exported", patient_id=patient_id, **found.counts()
        )
    log.info(
        "patient %d: subject access export",
        patient_id,
        extra={"event": "subject_rights.exported"},
    )
    return document


@dataclass(frozen=True)
class Erased:
    patient_id: int
    already: bool  # erased before: this run only made sure of it
    cancelled: int  # sends stopped
    in_flight: list[int]  # sends already with a provider, which nothing could stop
    enrollments_ended: int
    suppressed: list[str]  # channels whose address is now suppressed
    scrubbed: dict[str, int]  # rows whose text or details were removed, by table


def erase(
    db: Database,
    patient_id: int,
    now: datetime,
    *,
    actor: str,
    source: ConsentSource = ConsentSource.CLI,
) -> Erased:
    """Erase the patient's personal data and stop every message to her (see the module)."""
    with db.session() as session:
        patient = lock_patient(session, patient_id)  # NotFoundError for an unknown id
        already = patient.erased_at is not None
        found = held(session, patient)
        secrets = _secrets(patient)

        suppressed = []
        for channel, address in ((Channel.SMS, patient.phone), (Channel.EMAIL, patient.email)):
            if address:
                reachability.suppress(session, channel, address, now, source=source, reason=REASON)
                suppressed.append(channel.value)

        enrollment_ids = [e.id for e in found.enrollments]
        cancelled = cancel_live(session, enrollment_ids, REASON, now)
        live = active_enrollments(session, patient.id, ENDABLE)
        for each in live:
            each.status, each.status_reason, each.held_from = EnrollmentStatus.STOPPED, REASON, None
            each.ended_at = each.updated_at = now

        scrubbed = {
            "messages": _scrub_messages(session, [m.id for m in found.messages]),
            "provider_events": _scrub_details(found.provider_events, secrets, wipe=True),
            "inbound_messages": _scrub_inbound(found.inbound, secrets),
            "alerts": _scrub_alerts(found.alerts, secrets),
            "consent_events": _scrub_consents(found.consents, secrets),
            "audit_events": _scrub_details(found.audit, secrets, wipe=False),
        }
        if patient.phone:
            # The inbox's thread of texts from her number before it was hers keeps no number.
            session.execute(
                delete(Conversation).where(
                    Conversation.patient_id.is_(None), Conversation.sender == patient.phone
                )
            )
        patient.name, patient.phone, patient.email, patient.clinic_ref = ERASED, None, None, None
        patient.erased_at = patient.erased_at or now
        done = Erased(
            patient_id=patient.id,
            already=already,
            cancelled=cancelled.count,
            in_flight=cancelled.in_flight,
            enrollments_ended=len(live),
            suppressed=suppressed,
            scrubbed=scrubbed,
        )
        audit.record(
            session,
            now,
            actor,
            "erased",
            patient_id=patient.id,
            already=already,
            cancelled=done.cancelled,
            in_flight=done.in_flight,
            enrollments_ended=done.enrollments_ended,
            suppressed=suppressed,
            scrubbed=scrubbed,
        )
    log.info(
        "patient %d erased: %d sends cancelled, %d enrollments ended",
        patient_id,
        done.cancelled,
        done.enrollments_ended,
        extra={"event": "subject_rights.erased"},
    )
    return done


def _secrets(patient: Patient) -> re.Pattern[str] | None:
    """Her details as they may be written elsewhere, case-blind: phone and email anywhere in a
    string, name and clinic reference as whole words (a short name is part of many words)."""
    anywhere = [patient.email, patient.phone]
    if patient.phone and patient.phone.startswith("+44"):
        anywhere.append("0" + patient.phone[3:])  # the national form of a UK number
    words = [patient.name, patient.clinic_ref] if patient.name != ERASED else [patient.clinic_ref]
    parts = [re.escape(a.strip()) for a in anywhere if a and a.strip()]
    parts += [rf"\b{re.escape(w.strip())}\b" for w in words if w and w.strip()]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _clean(value: Any, secrets: re.Pattern[str] | None) -> Any:
    """`value` with every string holding one of her details replaced by the placeholder."""
    if secrets is None:
        return value
    if isinstance(value, str):
        return ERASED if secrets.search(value) else value
    if isinstance(value, dict):
        return {k: _clean(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, secrets) for v in value]
    return value


def _scrub_messages(session: Session, message_ids: Sequence[int]) -> int:
    if not message_ids:
        return 0
    result = session.execute(
        update(ScheduledMessage)
        .where(ScheduledMessage.id.in_(message_ids))
        .values(body=None, subject=None)
        .execution_options(synchronize_session=False)
    )
    return int(cast(CursorResult[Any], result).rowcount)


def _scrub_details(
    rows: Iterable[ProviderEvent | AuditEvent], secrets: re.Pattern[str] | None, *, wipe: bool
) -> int:
    """Provider events' details are the provider's copy of the message's metadata: removed.
    Audit details hold ids and reasons: only a stray copy of her details is replaced."""
    changed = 0
    for row in rows:
        cleaned: dict[str, Any] = {} if wipe else _clean(row.detail, secrets)
        if isinstance(row, AuditEvent):
            actor = _clean(row.actor, secrets)
            if actor != row.actor:
                row.actor = actor
        if cleaned != row.detail:
            row.detail = cleaned
            changed += 1
    return changed


def _scrub_inbound(rows: Sequence[InboundMessage], secrets: re.Pattern[str] | None) -> int:
    for row in rows:
        row.body = row.sender = ERASED
        # How it was read stays (intent, tier, language); the words she wrote go.
        row.matched = {k: v for k, v in row.matched.items() if k in {"intent", "tier", "language"}}
        row.replies = [
            {"template": r.get("template")} if isinstance(r, dict) else ERASED for r in row.replies
        ]
        row.actions = _clean(row.actions, secrets)
    return len(rows)


def _scrub_alerts(rows: Sequence[Alert], secrets: re.Pattern[str] | None) -> int:
    for row in rows:
        row.matched = []  # her words
        row.detail = _clean(row.detail, secrets)
    return len(rows)


def _scrub_consents(rows: Sequence[ConsentEvent], secrets: re.Pattern[str] | None) -> int:
    changed = 0
    for row in rows:
        actor = _clean(row.actor, secrets)
        if actor != row.actor:
            row.actor, changed = actor, changed + 1
    return changed
