"""Fixing messages that did not go, from the message log: retry, mark sent, mark not sent,
cancel. Each is one transaction over the rows chosen (locked), audited as the staff member who
asked; rows the action does not apply to are refused by id with the reason in staff words, and
the others are done (unlike `campaigns requeue`, which is all or none).

    retry          failed | bounced | undelivered -> pending (sent again from now)
    mark sent      unknown -> sent (staff saw it at the provider; never sent again)
    mark not sent  unknown -> pending if it may still go, else failed (staff saw it was not)
    cancel         pending | failed | unknown -> cancelled

Nothing goes back to pending for a patient who said STOP, reported a loss, finished or paused
her programme, withdrew consent, or whose address is marked as not working: such a retry is
refused (cancel it instead). The send path checks all of it again under her lock anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update

from campaigns import audit
from campaigns.delivery import REQUEUED
from campaigns.rules.consent import ConsentState
from campaigns.rules.contacts import address_hash
from campaigns.rules.errors import InputError
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus, StepKind
from campaigns.storage.consents import consent_states, suppressions
from campaigns.storage.db import Database, among
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage
from campaigns.storage.outbox import lock_patients

log = logging.getLogger(__name__)
SM = ScheduledMessage

#: At most this many rows per action (a page of the log is 100).
MAX_ROWS = 500


class Action(StrEnum):
    RETRY = "retry"
    MARK_SENT = "mark_sent"
    MARK_NOT_SENT = "mark_not_sent"
    CANCEL = "cancel"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Action.RETRY: "Retry",
    Action.MARK_SENT: "Mark sent",
    Action.MARK_NOT_SENT: "Mark not sent",
    Action.CANCEL: "Cancel",
}
#: What each action takes.
TAKES: dict[Action, frozenset[MessageStatus]] = {
    Action.RETRY: frozenset(
        {MessageStatus.FAILED, MessageStatus.BOUNCED, MessageStatus.UNDELIVERED}
    ),
    Action.MARK_SENT: frozenset({MessageStatus.UNKNOWN}),
    Action.MARK_NOT_SENT: frozenset({MessageStatus.UNKNOWN}),
    Action.CANCEL: frozenset({MessageStatus.PENDING, MessageStatus.FAILED, MessageStatus.UNKNOWN}),
}
#: The audit trail's word for each.
AUDITED = {
    Action.RETRY: "requeued",
    Action.MARK_SENT: "marked_sent",
    Action.MARK_NOT_SENT: "marked_not_sent",
    Action.CANCEL: "cancelled_by_staff",
}
#: How long a note may be (it is kept in the audit trail).
NOTE_LENGTH = 500


@dataclass(frozen=True)
class Refusal:
    message_id: int
    reason: str


@dataclass
class Outcome:
    """What an action did: the rows done, the rows refused (and why), and, for mark not sent,
    the rows that may not go again and were settled as failed instead."""

    action: Action
    done: list[int] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    not_sendable: list[Refusal] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the page's notice."""
        count = len(self.done)
        noun = "message" if count == 1 else "messages"
        verb = {
            Action.RETRY: "will be sent again",
            Action.MARK_SENT: "marked as sent",
            Action.MARK_NOT_SENT: "marked as not sent",
            Action.CANCEL: "cancelled",
        }[self.action]
        parts = [f"{count} {noun} {verb}."]
        if self.action is Action.MARK_NOT_SENT and count:
            again = count - len(self.not_sendable)
            parts.append(f"{again} will be sent again.")
        parts += [
            f"Message {r.message_id} will not be sent again: {r.reason}; it is now failed."
            for r in self.not_sendable
        ]
        parts += [f"Message {r.message_id} not changed: {r.reason}." for r in self.refused]
        return " ".join(parts)


def parse_ids(values: Iterable[str]) -> list[int]:
    """The ticked rows' ids, in order, once each; a clear error for anything else."""
    ids: list[int] = []
    for value in values:
        text = str(value).strip()
        if not text.isdigit() or int(text) < 1:
            raise InputError("Messages", f"{text[:20]!r} is not a message number")
        if int(text) not in ids:
            ids.append(int(text))
    if not ids:
        raise InputError("Messages", "tick at least one message first")
    if len(ids) > MAX_ROWS:
        raise InputError("Messages", f"choose at most {MAX_ROWS} messages at a time")
    return ids


def parse_action(value: str) -> Action:
    try:
        return Action(value.strip())
    except ValueError:
        raise InputError("Action", f"{value[:30]!r} is not something that can be done") from None


def apply(
    db: Database,
    action: Action,
    message_ids: Sequence[int],
    now: datetime,
    *,
    actor: str,
    note: str = "",
) -> Outcome:
    """Do `action` to each message that it applies to, in one transaction; audited."""
    note = note.strip()
    if action in (Action.MARK_SENT, Action.MARK_NOT_SENT) and not note:
        raise InputError(
            "Note", "say what the provider's records show (required to mark a message)"
        )
    if len(note) > NOTE_LENGTH:
        raise InputError("Note", f"keep it under {NOTE_LENGTH} characters")
    wanted = list(dict.fromkeys(int(i) for i in message_ids))
    outcome = Outcome(action)
    with db.session() as session:
        connection = session.connection()
        postgres = db.is_postgres
        patient_ids = list(
            session.execute(
                select(Enrollment.patient_id)
                .join(SM, SM.enrollment_id == Enrollment.id)
                .where(among(SM.id, wanted, postgres=postgres))
                .distinct()
            ).scalars()
        )
        # Her STOP, loss or withdrawal (which take her lock) is either before us or after us.
        lock_patients(connection, patient_ids)
        found = {
            row.id: row
            for row in session.execute(
                select(
                    SM.id,
                    SM.status,
                    SM.reason,
                    SM.channel,
                    SM.kind,
                    SM.expires_at,
                    SM.provider,
                    SM.provider_id,
                    SM.error_code,
                    SM.attempts,
                    SM.call_started_at,
                    SM.sent_at,
                    Enrollment.status.label("enrollment_status"),
                    Enrollment.patient_id,
                    Patient.phone,
                    Patient.email,
                    Patient.phone_invalid_at,
                    Patient.email_invalid_at,
                )
                .join(Enrollment, Enrollment.id == SM.enrollment_id)
                .join(Patient, Patient.id == Enrollment.patient_id)
                .where(among(SM.id, wanted, postgres=postgres))
                .with_for_update(of=SM)
            )
        }
        consents = consent_states(connection, patient_ids)
        hashes = _address_hashes(found.values())
        suppressed = suppressions(connection, hashes)
        for message_id in wanted:
            row = found.get(message_id)
            if row is None:
                outcome.refused.append(Refusal(message_id, "there is no such message"))
                continue
            status = MessageStatus(row.status)
            if status not in TAKES[action]:
                outcome.refused.append(Refusal(message_id, _not_taken(action, status)))
                continue
            why_not = _why_not_again(row, consents[row.patient_id], suppressed, now)
            if action is Action.RETRY and why_not:
                outcome.refused.append(Refusal(message_id, f"{why_not} (cancel it instead)"))
                continue
            values = _values(action, row, now, why_not)
            session.execute(update(SM).where(SM.id == message_id).values(values))
            if action is Action.MARK_NOT_SENT and why_not:
                outcome.not_sendable.append(Refusal(message_id, why_not))
            outcome.done.append(message_id)
            audit.record(
                session,
                now,
                actor,
                AUDITED[action],
                patient_id=row.patient_id,
                message_id=message_id,
                previous_status=status.value,
                status=values["status"],
                provider=row.provider,
                provider_id=row.provider_id,
                error_code=row.error_code,
                attempts=row.attempts,
                note=note or None,
                via="message_log",
            )
    log.info(
        "message log %s: %d done, %d refused",
        action.value,
        len(outcome.done),
        len(outcome.refused),
        extra={"event": "message_actions.applied"},
    )
    return outcome


def _values(action: Action, row: Any, now: datetime, why_not: str) -> dict[str, Any]:
    if action is Action.RETRY or (action is Action.MARK_NOT_SENT and not why_not):
        # A fresh start: the earlier try's provider, id and times go (they are in the audit).
        return {
            **REQUEUED,
            "reason": "requeued" if action is Action.RETRY else "marked_not_sent",
            "next_attempt_at": now,
            "provider_id": None,
            "sent_at": None,
            "delivered_at": None,
            "send_started_at": None,
            "updated_at": now,
        }
    if action is Action.MARK_NOT_SENT:
        return {
            "status": MessageStatus.FAILED.value,
            "reason": "marked_not_sent",
            "claim_token": None,
            "reconcile_at": None,
            "updated_at": now,
        }
    if action is Action.MARK_SENT:
        return {
            "status": MessageStatus.SENT.value,
            "reason": "marked_sent",
            "sent_at": func.coalesce(SM.sent_at, SM.call_started_at, now),
            "claim_token": None,
            "reconcile_at": None,
            "updated_at": now,
        }
    return {
        "status": MessageStatus.CANCELLED.value,
        "reason": "cancelled_by_staff",
        "claim_token": None,
        "reconcile_at": None,
        "updated_at": now,
    }


def _not_taken(action: Action, status: MessageStatus) -> str:
    said = STATUS_WORDS.get(status, status.value)
    if action is Action.RETRY:
        if status is MessageStatus.UNKNOWN:
            return (
                f"it is {said}: check it at the provider, then mark it sent or not sent "
                "(not sent sends it again)"
            )
        return f"it is {said}; only failed, bounced or undelivered messages can be retried"
    if action in (Action.MARK_SENT, Action.MARK_NOT_SENT):
        return f"it is {said}; only messages whose outcome is unknown can be marked"
    return f"it is {said}; only waiting, failed or unknown messages can be cancelled"


#: Statuses in staff words.
STATUS_WORDS = {
    MessageStatus.PENDING: "waiting to be sent",
    MessageStatus.CLAIMED: "being sent right now",
    MessageStatus.SENDING: "being sent right now",
    MessageStatus.SENT: "sent",
    MessageStatus.DELIVERED: "delivered",
    MessageStatus.UNDELIVERED: "undelivered",
    MessageStatus.BOUNCED: "bounced",
    MessageStatus.CANCELLED: "cancelled",
    MessageStatus.SKIPPED: "skipped",
    MessageStatus.EXPIRED: "expired",
    MessageStatus.UNKNOWN: "unknown (the provider has not said whether it went)",
    MessageStatus.FAILED: "failed",
}


def _address(row: Any) -> str | None:
    found = row.phone if row.channel == Channel.SMS.value else row.email
    return None if found is None else str(found)


def _address_hashes(rows: Iterable[Any]) -> dict[str, str]:
    return {address_hash(a): row.channel for row in rows if (a := _address(row))}


def _why_not_again(
    row: Any,
    consent: ConsentState,
    suppressed: set[tuple[str, str]],
    now: datetime,
) -> str:
    """Why this message may not be sent again, in staff words; "" if it may."""
    channel = Channel(row.channel)
    words = "texts" if channel is Channel.SMS else "emails"
    enrollment = EnrollmentStatus(row.enrollment_status)
    if enrollment in (EnrollmentStatus.LOSS_HOLD, EnrollmentStatus.ENDED_LOSS):
        return "a pregnancy loss was reported, so nothing more is sent"
    if enrollment is EnrollmentStatus.STOPPED:
        return "she stopped the programme"
    if enrollment is EnrollmentStatus.COMPLETED:
        return "her programme has finished"
    if enrollment is EnrollmentStatus.PAUSED:
        return "her messages are paused"
    address = _address(row)
    if address is None:
        return f"she has no {'mobile number' if channel is Channel.SMS else 'email address'}"
    invalid = row.phone_invalid_at if channel is Channel.SMS else row.email_invalid_at
    if invalid is not None:
        what = "mobile number" if channel is Channel.SMS else "email address"
        return f"her {what} is marked as not working; correct it on her page first"
    if (row.channel, address_hash(address)) in suppressed:
        return f"she opted out of {words} (STOP or unsubscribe)"
    if not consent.allows(StepKind(row.kind), channel):
        return f"she has not consented to {words} of this kind"
    if row.expires_at is not None and now >= row.expires_at:
        return "it has expired (its moment has passed)"
    return ""
