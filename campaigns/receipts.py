"""What providers tell us after a send: Twilio status callbacks and SendGrid events.

Each item is recorded once (provider_events, keyed for deduplication), then moves its message
along the state machine inside one transaction that holds the patient's lock:

    sending | unknown -> sent -> delivered | undelivered | bounced | failed

A status never moves backwards (a late bounce beats "delivered"), except that an undelivered
SMS with a temporary error (30003, 30008) goes back to pending to be tried again. Opt-outs
suppress the channel; dead addresses are marked invalid (SMS falls back to email); account
errors halt the channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session

from campaigns import halts, reachability
from campaigns.planner import Planner
from campaigns.providers.twilio import ErrorAction, error_action
from campaigns.rules.vocabulary import Channel, ConsentSource, MessageStatus
from campaigns.rules.window import SendWindow, zone
from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import Enrollment, Patient, ProviderEvent, ScheduledMessage

log = logging.getLogger(__name__)
SM = ScheduledMessage
RANK = {
    MessageStatus.SENDING: 0,
    MessageStatus.UNKNOWN: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 2,
    MessageStatus.FAILED: 2,
    # A bounce is a bounce: a receiving server may accept an email ("delivered") and bounce it
    # later, and the message then shows what finally happened to it.
    MessageStatus.BOUNCED: 3,
}
RESEND_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class Context:
    db: Database
    planner: Planner
    window: SendWindow
    max_attempts: int


def twilio_status(
    ctx: Context, form: Mapping[str, str], message_id: int | None, now: datetime
) -> str:
    """Apply one status callback; returns what happened (for logs and tests)."""
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    error = form.get("ErrorCode") or ""
    if not sid or not status:
        raise ValueError("MessageSid and MessageStatus are required")
    key, payload = f"{sid}:{status}:{error}", {"status": status, "error": error}
    forward = _FORWARD_ONLY.get(("twilio", status))
    if forward is not None and message_id is not None:
        return _move_forward(ctx, "twilio", key, message_id, sid, forward, status, payload, now)
    with ctx.db.session() as session:
        row = _find(session, message_id, provider_id=sid)
        if not _first_time(session, "twilio", key, row, status, payload, now):
            return "duplicate"
        if row is None:
            return "unknown_message"
        if row.provider_id not in (None, sid):
            return "stale_attempt"  # a callback for an earlier try of a message resent since
        patient, row = _locked(session, row)
        row.provider, row.provider_id = "twilio", sid
        if status in ("queued", "accepted", "sending", "sent", "scheduled"):
            return _advance(row, MessageStatus.SENT, now)
        if status in ("delivered", "read"):
            return _advance(row, MessageStatus.DELIVERED, now)
        if status not in ("undelivered", "failed", "canceled"):
            return "ignored"
        return _twilio_failure(ctx, session, patient, row, status, error, now)


def _twilio_failure(
    ctx: Context,
    session: Session,
    patient: Patient,
    row: ScheduledMessage,
    status: str,
    error: str,
    now: datetime,
) -> str:
    """A text Twilio could not deliver: sent again when Twilio says it may be, else settled,
    and what the error asks of the patient's record or the channel done (row and patient
    locked)."""
    final = MessageStatus.FAILED if status == "failed" else MessageStatus.UNDELIVERED
    action = error_action(int(error), None) if error.isdigit() else ErrorAction.GIVE_UP
    row.error_code = error or status
    if (
        action is ErrorAction.RETRY
        and row.attempts < ctx.max_attempts
        and RANK.get(MessageStatus(row.status), 0) < 2
    ):
        row.status, row.claim_token, row.updated_at = MessageStatus.PENDING, None, now
        row.provider_id, row.reason = None, f"resend_after_{error}"
        row.next_attempt_at = ctx.window.next_open(now + RESEND_AFTER, zone(patient.timezone))
        return "resend"
    result = _advance(row, final, now, reason=f"twilio_{error or status}")
    reason, actor = f"twilio:{error}", "provider:twilio"
    if action is ErrorAction.OPT_OUT:
        reachability.opt_out(
            session,
            patient,
            Channel.SMS,
            now,
            source=ConsentSource.PROVIDER,
            reason=reason,
            actor=actor,
        )
    elif action is ErrorAction.INVALID_NUMBER:
        reachability.mark_invalid(
            session, ctx.planner, patient, Channel.SMS, now, reason=reason, actor=actor
        )
    elif action is ErrorAction.HALT:
        halts.record(session, Channel.SMS, "twilio", error, "error in a status callback", now)
    return result


def sendgrid_events(ctx: Context, events: list[Any], now: datetime) -> dict[str, int]:
    """Apply a batch of Event Webhook items; returns counts of what happened."""
    counts: dict[str, int] = {}
    for event in events:
        result = _sendgrid_event(ctx, event, now) if isinstance(event, dict) else "malformed"
        counts[result] = counts.get(result, 0) + 1
    return counts


def _sendgrid_event(ctx: Context, event: dict[str, Any], now: datetime) -> str:
    key, kind = str(event.get("sg_event_id") or ""), str(event.get("event") or "")
    if not key or not kind:
        return "malformed"
    raw_id = str(event.get("message_id") or "")
    message_id = int(raw_id) if raw_id.isdigit() else None
    provider_id = str(event.get("sg_message_id") or "").split(".", 1)[0] or None
    detail: dict[str, Any] = {
        k: event[k] for k in ("type", "reason", "status", "asm_group_id") if k in event
    }
    forward = _FORWARD_ONLY.get(("sendgrid", kind))
    if forward is not None and message_id is not None:
        return _move_forward(
            ctx, "sendgrid", key, message_id, provider_id, forward, kind, detail, now
        )
    with ctx.db.session() as session:
        row = _find(session, message_id, provider_id=None)
        if not _first_time(session, "sendgrid", key, row, kind, detail, now):
            return "duplicate"
        if row is None:
            return "unknown_message"
        patient, row = _locked(session, row)
        row.provider = "sendgrid"
        row.provider_id = row.provider_id or provider_id
        reason = str(event.get("reason") or "")
        if kind == "processed":
            return _advance(row, MessageStatus.SENT, now)
        if kind == "delivered":
            return _advance(row, MessageStatus.DELIVERED, now)
        if kind == "bounce":
            if event.get("type") == "blocked":
                return _advance(row, MessageStatus.UNDELIVERED, now, reason="sendgrid_blocked")
            result = _advance(row, MessageStatus.BOUNCED, now, reason="sendgrid_bounce")
            _email_invalid(session, ctx, patient, now, "sendgrid:bounce")
            return result
        if kind == "dropped":
            result = _advance(row, MessageStatus.FAILED, now, reason="sendgrid_dropped")
            if reason in ("Unsubscribed Address", "Spam Reporting Address"):
                _opt_out_email(session, patient, now, f"sendgrid:dropped:{reason}")
            elif reason in ("Bounced Address", "Invalid"):
                _email_invalid(session, ctx, patient, now, "sendgrid:dropped")
            else:
                log.error(
                    "ALERT: SendGrid dropped message %d (%s)",
                    row.id,
                    reason,
                    extra={"event": "receipts.sendgrid_dropped_message"},
                )
            return result
        if kind in ("spamreport", "unsubscribe", "group_unsubscribe"):
            _opt_out_email(session, patient, now, f"sendgrid:{kind}")
            return "opted_out"
        return "ignored"  # deferred (SendGrid keeps trying), open, click, group_resubscribe


#: News that only moves a message forward (it went; it was delivered) and asks for nothing
#: else: applied by one guarded UPDATE, without the patient's lock (nothing it does can race a
#: cancellation: a cancellation never takes a message whose call has started). At full speed
#: these are most of the webhook traffic: two or three for every message sent.
_FORWARD_ONLY: dict[tuple[str, str], MessageStatus] = {
    **{
        ("twilio", status): MessageStatus.SENT
        for status in ("queued", "accepted", "sending", "sent", "scheduled")
    },
    ("twilio", "delivered"): MessageStatus.DELIVERED,
    ("twilio", "read"): MessageStatus.DELIVERED,
    ("sendgrid", "processed"): MessageStatus.SENT,
    ("sendgrid", "delivered"): MessageStatus.DELIVERED,
}
_BEFORE = {
    MessageStatus.SENT: [MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value],
    MessageStatus.DELIVERED: [
        MessageStatus.SENDING.value,
        MessageStatus.UNKNOWN.value,
        MessageStatus.SENT.value,
    ],
}


def _move_forward(
    ctx: Context,
    provider: str,
    key: str,
    message_id: int,
    provider_id: str | None,
    status: MessageStatus,
    kind: str,
    detail: dict[str, Any],
    now: datetime,
) -> str:
    """Record the event once, and move the message forward if it is behind: two statements."""
    with ctx.db.session() as session:
        if not insert_if_absent(
            session,
            ProviderEvent,
            provider=provider,
            event_key=key[:200],
            message_id=message_id,
            kind=kind[:64],
            received_at=now,
            detail=detail,
        ):
            return "duplicate"
        values: dict[str, Any] = {
            "status": status.value,
            "provider": provider,
            "sent_at": func.coalesce(SM.sent_at, now),
            "updated_at": now,
        }
        if provider_id:
            values["provider_id"] = func.coalesce(SM.provider_id, provider_id)
        if status is MessageStatus.DELIVERED:
            values["delivered_at"] = now
        moved = session.execute(
            update(SM)
            .where(
                SM.id == message_id,
                SM.status.in_(_BEFORE[status]),
                # A callback for an earlier try of a message resent since changes nothing.
                or_(SM.provider_id.is_(None), SM.provider_id == (provider_id or SM.provider_id)),
            )
            .values(values)
        )
    return status.value if _rowcount(moved) else "no_change"


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _email_invalid(
    session: Session, ctx: Context, patient: Any, now: datetime, reason: str
) -> None:
    reachability.mark_invalid(
        session, ctx.planner, patient, Channel.EMAIL, now, reason=reason, actor="provider:sendgrid"
    )


def _opt_out_email(session: Session, patient: Any, now: datetime, reason: str) -> None:
    reachability.opt_out(
        session,
        patient,
        Channel.EMAIL,
        now,
        source=ConsentSource.PROVIDER,
        reason=reason,
        actor="provider:sendgrid",
    )


def _find(
    session: Session, message_id: int | None, provider_id: str | None
) -> ScheduledMessage | None:
    if message_id is not None:
        found = session.get(SM, message_id)
        if found is not None:
            return found
    if provider_id:
        return session.execute(select(SM).where(SM.provider_id == provider_id)).scalar_one_or_none()
    return None


def _first_time(
    session: Session,
    provider: str,
    key: str,
    row: ScheduledMessage | None,
    kind: str,
    detail: dict[str, Any],
    now: datetime,
) -> bool:
    return insert_if_absent(
        session,
        ProviderEvent,
        provider=provider,
        event_key=key[:200],
        message_id=row.id if row else None,
        kind=kind[:64],
        received_at=now,
        detail=detail,
    )


def _locked(session: Session, row: ScheduledMessage) -> tuple[Patient, ScheduledMessage]:
    """The message's patient locked (FOR UPDATE, found through the enrollment in the same
    statement), then the message as it is now, with whatever we waited on."""
    patient = session.execute(
        select(Patient)
        .join(Enrollment, Enrollment.patient_id == Patient.id)
        .where(Enrollment.id == row.enrollment_id)
        .with_for_update(of=Patient)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return patient, _reread(session, row.id)


def _reread(session: Session, message_id: int) -> ScheduledMessage:
    return session.execute(
        select(SM).where(SM.id == message_id).execution_options(populate_existing=True)
    ).scalar_one()


def _advance(
    row: ScheduledMessage, status: MessageStatus, now: datetime, reason: str | None = None
) -> str:
    """Move forward only: callbacks come late, twice and out of order."""
    current = MessageStatus(row.status)
    if current not in RANK or RANK[status] <= RANK[current]:
        return "no_change"
    row.status, row.updated_at = status, now
    if reason:
        row.reason = reason
    if status is MessageStatus.DELIVERED:
        row.delivered_at = now
    if row.sent_at is None:
        row.sent_at = now  # an unknown send turns out to have gone
    return status.value
