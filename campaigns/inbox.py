"""The conversation inbox: every text we received, grouped by patient (or by the number, for
a number no patient has), newest first, with how each was read and answered; unread until
staff mark it handled (a newer text makes it unread again); staff replies; texts from an
unknown number linked to a patient or marked a wrong number.

A staff reply is an outbox row of kind `staff_reply`, due now, with its words written on the
row: the normal dispatch and send path takes it, so the rate limits, the patient's lock and
every check before a call (consent, STOP and suppression, loss hold and every other
enrollment state, a dead number) apply to it as to any message; only the send window can be
set aside, by a clinician, for one reply. It is checked here too, under the patient's lock,
so staff are told at once why a text cannot go rather than finding it cancelled later.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.rules import send_rules
from campaigns.rules.contacts import address_hash
from campaigns.rules.content import staff_sms
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.send_rules import Facts, Outcome
from campaigns.rules.vocabulary import Channel, MessageStatus, StepKind
from campaigns.rules.window import SendWindow
from campaigns.storage.consents import consent_states, suppressions
from campaigns.storage.db import Database
from campaigns.storage.models import (
    Conversation,
    Enrollment,
    InboundMessage,
    Patient,
    ScheduledMessage,
    StaffReply,
)
from campaigns.storage.patients import lock_patient

#: Step keys of staff replies: the prefix and the reply form's one-time key, so the same
#: form sent twice (a double click, a resent page) writes one row.
STAFF_REPLY_STEP = "staff_reply:"
_FORM_KEY = re.compile(r"^[0-9a-f]{8,32}$")
#: A staff reply not sent within this long (the window stayed shut, the channel halted) expires:
#: words written for today are not sent days later.
REPLY_VALID_FOR = timedelta(hours=72)
PAGE = 50

#: Why a reply cannot go, in staff words, by the send rules' reason.
REFUSALS = {
    "enrollment_loss_hold": (
        "She told us of a pregnancy loss: every message to her is held until staff confirm or "
        "clear it on the alert. No text can go to her now; call her if she needs an answer."
    ),
    "enrollment_ended_loss": (
        "Her programme ended after a pregnancy loss: we no longer text her. Call her instead."
    ),
    "enrollment_paused": (
        "Her messages are paused: resume them on her page first, or call her instead."
    ),
    "enrollment_stopped": "Her programme was stopped: we no longer text her. Call her instead.",
    "enrollment_completed": (
        "Her programme has finished: we no longer text her. Call her instead."
    ),
    "no_address": "She has no mobile number on record.",
    "invalid_address": (
        "Her mobile number cannot receive texts (the provider said so): check it with her."
    ),
    "suppressed": (
        "She texted STOP (or her number opted out at the network): we cannot text her unless "
        "she texts START."
    ),
    "no_consent": ("She has not agreed to texts, or withdrew her agreement: we cannot text her."),
    "expired_before_send": "The reply waited too long and was not sent.",
}
#: Why a staff reply was not sent, for rows the send path settled, by the row's reason.
NOT_SENT = {
    **REFUSALS,
    "opted_out": "She opted out of texts before it went.",
    "loss_reported": "She told us of a pregnancy loss before it went.",
}


def refusal(reason: str | None) -> str:
    return REFUSALS.get(reason or "", f"It cannot be sent ({reason}).")


# --- keeping conversations up to date ----------------------------------------------------


def note_inbound(
    session: Session, inbound_id: int, patient_id: int | None, sender: str, now: datetime
) -> None:
    """A text was stored: its conversation's newest text is now this one (unread again).
    In the caller's transaction (the one that stored the text)."""
    values: dict[str, Any] = {
        "patient_id": patient_id,
        "sender": None if patient_id is not None else sender,
        "last_inbound_id": inbound_id,
        "last_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Conversation).values(values)
    newer = statement.excluded.last_inbound_id > Conversation.last_inbound_id
    key, where = (
        (["patient_id"], Conversation.patient_id.is_not(None))
        if patient_id is not None
        else (["sender"], Conversation.patient_id.is_(None))
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=key,
            index_where=where,
            set_={
                "last_inbound_id": case(
                    (newer, statement.excluded.last_inbound_id),
                    else_=Conversation.last_inbound_id,
                ),
                "last_at": case((newer, statement.excluded.last_at), else_=Conversation.last_at),
            },
        )
    )


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    conversation: Conversation
    patient: Patient | None
    last: InboundMessage
    texts: int  # how many texts are unread (all of them if none was handled)

    @property
    def unread(self) -> bool:
        return is_unread(self.conversation)


def is_unread(conversation: Conversation) -> bool:
    handled = conversation.handled_through
    return handled is None or handled < conversation.last_inbound_id


@dataclass(frozen=True)
class Listing:
    rows: list[Listed]
    older: int | None  # `before` for the next page, if there is one


def conversations(
    session: Session, *, unread_only: bool = False, before: int | None = None, limit: int = PAGE
) -> Listing:
    """Conversations, the one with the newest text first (keyset paging on that text's id)."""
    query = (
        select(Conversation, Patient, InboundMessage)
        .join(InboundMessage, InboundMessage.id == Conversation.last_inbound_id)
        .join(Patient, Patient.id == Conversation.patient_id, isouter=True)
        .order_by(Conversation.last_inbound_id.desc())
        .limit(limit + 1)
    )
    if unread_only:
        query = query.where(
            (Conversation.handled_through.is_(None))
            | (Conversation.handled_through < Conversation.last_inbound_id)
        )
    if before is not None:
        query = query.where(Conversation.last_inbound_id < before)
    found = session.execute(query).all()
    rows = [Listed(c, p, m, 0) for c, p, m in found[:limit]]
    older = rows[-1].conversation.last_inbound_id if len(found) > limit else None
    return Listing(rows, older)


def open_count(session: Session) -> int:
    """How many conversations are unread (for the dashboard and the inbox's heading)."""
    return int(
        session.execute(
            select(func.count())
            .select_from(Conversation)
            .where(
                (Conversation.handled_through.is_(None))
                | (Conversation.handled_through < Conversation.last_inbound_id)
            )
        ).scalar_one()
    )


@dataclass(frozen=True)
class Entry:
    """One line of a conversation, in time order."""

    at: datetime
    direction: str  # "in": her text; "auto": our automatic answer; "out": a message of ours
    text: str
    inbound: InboundMessage | None = None
    message: ScheduledMessage | None = None
    author: str | None = None  # a staff reply's writer
    outside_window: bool = False

    @property
    def not_sent_why(self) -> str | None:
        """For a message that did not go (cancelled, expired, failed), why, in staff words."""
        m = self.message
        if m is None or m.status not in (
            MessageStatus.CANCELLED,
            MessageStatus.EXPIRED,
            MessageStatus.FAILED,
        ):
            return None
        return NOT_SENT.get(m.reason or "", f"Not sent ({m.reason or m.status.value}).")


@dataclass(frozen=True)
class ConversationView:
    conversation: Conversation
    patient: Patient | None
    entries: list[Entry]

    @property
    def unread(self) -> bool:
        return is_unread(self.conversation)


def conversation(session: Session, conversation_id: int) -> ConversationView:
    found = session.get(Conversation, conversation_id)
    if found is None:
        raise NotFoundError(f"no conversation {conversation_id}")
    patient = session.get(Patient, found.patient_id) if found.patient_id is not None else None
    texts = select(InboundMessage).order_by(InboundMessage.id)
    if found.patient_id is not None:
        texts = texts.where(InboundMessage.patient_id == found.patient_id)
    else:
        texts = texts.where(
            InboundMessage.patient_id.is_(None), InboundMessage.sender == found.sender
        )
    entries: list[Entry] = []
    for m in session.execute(texts).scalars():
        entries.append(Entry(m.received_at, "in", m.body, inbound=m))
        for reply in m.replies:
            if isinstance(reply, dict) and reply.get("text"):
                entries.append(Entry(m.received_at, "auto", str(reply["text"]), inbound=m))
    if patient is not None:
        entries.extend(_outgoing(session, patient.id))
    # Stable: her text comes before its automatic answer (same time), in the order stored.
    entries.sort(key=lambda e: e.at)
    return ConversationView(found, patient, entries)


def _outgoing(session: Session, patient_id: int) -> list[Entry]:
    """Her texts from us: programme messages that went (or were tried), and every staff reply."""
    rows = session.execute(
        select(ScheduledMessage, StaffReply)
        .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
        .join(StaffReply, StaffReply.message_id == ScheduledMessage.id, isouter=True)
        .where(
            Enrollment.patient_id == patient_id,
            ScheduledMessage.channel == Channel.SMS.value,
            (ScheduledMessage.call_started_at.is_not(None))
            | (ScheduledMessage.kind == StepKind.STAFF_REPLY.value),
        )
        .order_by(ScheduledMessage.id)
    ).all()
    found = []
    for message, reply in rows:
        at = message.sent_at or message.call_started_at or message.due_at
        found.append(
            Entry(
                at,
                "out",
                message.body or "",
                message=message,
                author=reply.author if reply is not None else None,
                outside_window=bool(reply.outside_window) if reply is not None else False,
            )
        )
    return found


# --- may she be texted? -------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyStatus:
    """Whether a staff reply could go to her now: a refusal in staff words, or None; and,
    if the send window is shut, when it opens."""

    problem: str | None
    window_opens: datetime | None = None


def reply_status(
    session: Session, patient: Patient, window: SendWindow, now: datetime
) -> ReplyStatus:
    """The send path's own checks (campaigns.rules.send_rules.check), on what she is now."""
    enrollment = _enrollment_for_reply(session, patient.id)
    if enrollment is None:
        return ReplyStatus("She has no programme with us, so we do not text her.")
    verdict = send_rules.check(_facts(session, patient, enrollment), now, window)
    if verdict is None:
        return ReplyStatus(None)
    if verdict.outcome is Outcome.DEFERRED:
        return ReplyStatus(None, verdict.next_attempt_at)
    return ReplyStatus(refusal(verdict.reason))


def _enrollment_for_reply(session: Session, patient_id: int) -> Enrollment | None:
    """Her newest enrollment (a reply rides on it, and is stopped by whatever stops it)."""
    return session.execute(
        select(Enrollment)
        .where(Enrollment.patient_id == patient_id)
        .order_by(Enrollment.id.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _facts(session: Session, patient: Patient, enrollment: Enrollment) -> Facts:
    connection = session.connection()
    consent = consent_states(connection, [patient.id])[patient.id]
    hashed = {address_hash(patient.phone)} if patient.phone else set()
    return Facts(
        id=0,
        attempts=0,
        next_attempt_at=enrollment.updated_at,
        step_key=STAFF_REPLY_STEP,
        channel=Channel.SMS,
        kind=StepKind.STAFF_REPLY,
        expires_at=None,
        enrollment_status=enrollment.status.value,
        campaign=enrollment.campaign,
        patient_id=patient.id,
        name=patient.name,
        phone=patient.phone,
        email=patient.email,
        timezone=patient.timezone,
        language=patient.language,
        discreet=patient.discreet,
        address_invalid=patient.phone_invalid_at is not None,
        marketing_hold_until=patient.marketing_hold_until,
        consent=consent,
        suppressed=bool(suppressions(connection, hashed)),
    )


# --- acting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Replied:
    message_id: int
    window_opens: datetime | None  # None: it goes now
    timezone: str  # hers, to say when in her time
    again: bool = False  # the same form was sent before: nothing new was written


def new_form_key() -> str:
    return uuid.uuid4().hex


def reply(
    db: Database,
    window: SendWindow,
    clinic_short_name: str,
    conversation_id: int,
    words: str,
    now: datetime,
    *,
    actor: str,
    form_key: str = "",
    outside_window: bool = False,
) -> Replied:
    """Write a staff reply to the outbox, due now (or, with `outside_window`, even while the
    send window is shut); the conversation is handled by it. Raises InputError (the words),
    StateError (she cannot be texted: why, in staff words) or NotFoundError."""
    sms = staff_sms(clinic_short_name, words)  # before anything is written
    key = form_key if _FORM_KEY.match(form_key) else new_form_key()
    with db.session() as session:
        found = session.get(Conversation, conversation_id)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id}")
        if found.patient_id is None:
            raise StateError(
                "This number is not a patient's: link it to a patient first. We never text "
                "a number we do not know."
            )
        patient = lock_patient(session, found.patient_id)
        step_key = STAFF_REPLY_STEP + key
        enrollment = _enrollment_for_reply(session, patient.id)
        if enrollment is None:
            raise StateError("She has no programme with us, so we do not text her.")
        earlier = session.execute(
            select(ScheduledMessage.id).where(
                ScheduledMessage.enrollment_id == enrollment.id,
                ScheduledMessage.step_key == step_key,
            )
        ).scalar_one_or_none()
        if earlier is not None:
            return Replied(earlier, None, patient.timezone, again=True)
        verdict = send_rules.check(_facts(session, patient, enrollment), now, window)
        opens = None
        if verdict is not None and verdict.outcome is Outcome.DEFERRED:
            opens = None if outside_window else verdict.next_attempt_at
        elif verdict is not None:
            raise StateError(refusal(verdict.reason))
        message = ScheduledMessage(
            enrollment_id=enrollment.id,
            step_key=step_key,
            channel=Channel.SMS.value,
            kind=StepKind.STAFF_REPLY.value,
            schedule_version=enrollment.schedule_version,
            status=MessageStatus.PENDING,
            due_at=now,
            next_attempt_at=now,
            expires_at=now + REPLY_VALID_FOR,
            attempts=0,
            updated_at=now,
            template_ref=sms.template_ref,
            body=sms.body,
            outside_window=True if outside_window else None,
        )
        session.add(message)
        session.flush()
        session.add(
            StaffReply(
                message_id=message.id,
                patient_id=patient.id,
                author=actor,
                outside_window=outside_window,
                created_at=now,
            )
        )
        _handled(found, now, actor)
        # Never the words: how long, and whether the window was set aside (and by whom).
        audit.record(
            session,
            now,
            actor,
            "staff_reply",
            patient_id=patient.id,
            enrollment_id=enrollment.id,
            message_id=message.id,
            conversation=found.id,
            characters=sms.encoding.units,
            encoding=sms.encoding.encoding,
            outside_window=outside_window,
        )
        return Replied(message.id, opens, patient.timezone)


def _handled(found: Conversation, now: datetime, actor: str) -> None:
    found.handled_through = found.last_inbound_id
    found.handled_at = now
    found.handled_by = actor


def mark_handled(db: Database, conversation_id: int, now: datetime, *, actor: str) -> None:
    with db.session() as session:
        found = session.get(Conversation, conversation_id, with_for_update=True)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id}")
        _handled(found, now, actor)
        audit.record(
            session,
            now,
            actor,
            "conversation_handled",
            patient_id=found.patient_id,
            conversation=found.id,
            through=found.last_inbound_id,
        )


def mark_wrong_number(db: Database, conversation_id: int, now: datetime, *, actor: str) -> None:
    """Texts from a number no patient has, sent to us by mistake: handled, and said so."""
    with db.session() as session:
        found = session.get(Conversation, conversation_id, with_for_update=True)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id}")
        if found.patient_id is not None:
            raise StateError("These are a patient's texts: only an unknown number can be wrong.")
        found.wrong_number_at, found.wrong_number_by = now, actor
        _handled(found, now, actor)
        audit.record(
            session,
            now,
            actor,
            "conversation_wrong_number",
            conversation=found.id,
            through=found.last_inbound_id,
        )


def link_to_patient(
    db: Database, conversation_id: int, patient_id: int, now: datetime, *, actor: str
) -> int:
    """The texts of an unknown number are hers: they join her conversation (which stays as
    handled as the texts in it are). Her phone number is not changed. Returns the id of her
    conversation."""
    with db.session() as session:
        found = session.get(Conversation, conversation_id, with_for_update=True)
        if found is None:
            raise NotFoundError(f"no conversation {conversation_id}")
        if found.patient_id is not None:
            raise StateError("These texts are already a patient's.")
        patient = session.get(Patient, patient_id)
        if patient is None or patient.erased_at is not None:
            raise InputError("Patient", f"there is no patient {patient_id} to link these texts to")
        moved = session.execute(
            update(InboundMessage)
            .where(InboundMessage.patient_id.is_(None), InboundMessage.sender == found.sender)
            .values(patient_id=patient.id)
            .returning(InboundMessage.id)
        ).scalars()
        moved_ids = sorted(int(i) for i in moved)
        hers = session.execute(
            select(Conversation).where(Conversation.patient_id == patient.id).with_for_update()
        ).scalar_one_or_none()
        unread = is_unread(found)
        if hers is None:
            found.patient_id, found.sender = patient.id, None
            found.wrong_number_at = found.wrong_number_by = None
            hers = found
        else:
            if found.last_inbound_id > hers.last_inbound_id:
                hers.last_inbound_id, hers.last_at = found.last_inbound_id, found.last_at
            if unread and hers.handled_through is not None:
                # Texts nobody handled joined hers: it is unread until someone does.
                hers.handled_through = min(hers.handled_through, found.handled_through or 0)
            session.delete(found)
        session.flush()
        audit.record(
            session,
            now,
            actor,
            "conversation_linked",
            patient_id=patient.id,
            conversation=hers.id,
            texts=moved_ids,
        )
        return hers.id
