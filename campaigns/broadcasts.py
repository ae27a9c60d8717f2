"""One-off broadcasts to a cohort: written as a draft, looked over (who would get it, what
they would read), scheduled for now or later, approved by a second member when the cohort is
large, and cancellable until sent. Every step is audited as the member who took it.

Scheduling writes one outbox row per patient and channel (step key `broadcast:<id>`, kind
marketing or service), due at the chosen time moved into her send window and past any day that
already holds a message for her; from there the send path treats it as any step: the window
and bank holidays, consent, STOP and suppression, a loss hold or any other enrollment state,
the marketing hold, a dead address and the rate limits are all checked again before the call.
Re-planning leaves it alone (campaigns.storage.plans.cancel_plan); whatever stops her messages
(a loss, a pause, STOP, erasure) stops it too.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.rules import broadcasts as rules
from campaigns.rules.broadcasts import Cohort, Draft, LeftOut, Purpose, Status, Text
from campaigns.rules.consent import ConsentState
from campaigns.rules.contacts import address_hash
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.vocabulary import Channel
from campaigns.rules.window import SendWindow, zone
from campaigns.storage import broadcasts as stored
from campaigns.storage.consents import consent_states, suppressions
from campaigns.storage.db import Database
from campaigns.storage.models import Broadcast
from campaigns.storage.plans import Cancelled, cancel_broadcast

log = logging.getLogger(__name__)
PAGE = 50


@dataclass(frozen=True)
class Audience:
    """Who in the cohort gets it, and why the others do not."""

    #: (patient id, channel, enrollment id, schedule version, patient's time zone) per message.
    sends: list[tuple[int, Channel, int, int, str]]
    matched: int  # patients in the cohort
    left_out: Counter[LeftOut] = field(default_factory=Counter)

    @property
    def recipients(self) -> int:
        return len({send[0] for send in self.sends})

    @property
    def by_channel(self) -> Counter[Channel]:
        return Counter(send[1] for send in self.sends)


def audience(
    connection: Connection, text: Text, cohort: Cohort, purpose: Purpose, day: date
) -> Audience:
    """The cohort on `day` (the clinic's date of sending), each patient once, with the channels
    she can be sent it on now: enrolled on it, consented to the purpose, not stopped, with a
    working address (the send path checks all this again before each call)."""
    rows = stored.cohort_rows(connection, cohort, day)
    patients = list(dict.fromkeys(r.patient_id for r in rows))
    consents: dict[int, ConsentState] = {}
    for piece in stored.chunks(connection, patients):
        consents.update(consent_states(connection, piece))
    hashes = {
        (r.patient_id, channel): address_hash(address)
        for r in rows
        for channel, address in ((Channel.SMS, r.phone), (Channel.EMAIL, r.email))
        if address
    }
    found: set[tuple[str, str]] = set()
    for piece in stored.chunks(connection, sorted(set(hashes.values()))):
        found |= suppressions(connection, piece)
    discreet_out = text.mentions_pregnancy()
    result = Audience([], len(patients))
    for patient_id, group in groupby(rows, key=lambda r: r.patient_id):
        members = [_member(r, hashes, found) for r in group]
        choice = rules.choose(
            members, consents[patient_id], cohort.channels, purpose, discreet_out=discreet_out
        )
        if choice.left_out is not None:
            result.left_out[choice.left_out] += 1
        result.sends.extend(
            (patient_id, channel, enrollment_id, version, members[0].timezone)
            for channel, enrollment_id, version in choice.sends
        )
    return result


def _member(
    row: stored.CohortRow,
    hashes: dict[tuple[int, Channel], str],
    found: set[tuple[str, str]],
) -> rules.Member:
    return rules.Member(
        enrollment_id=row.enrollment_id,
        patient_id=row.patient_id,
        schedule_version=row.schedule_version,
        channels=frozenset(Channel(c) for c in row.channels.split(",") if c),
        timezone=row.timezone,
        discreet=row.discreet,
        addresses={Channel.SMS: row.phone_ok, Channel.EMAIL: row.email_ok},
        suppressed=frozenset(
            c
            for c in Channel
            if (key := hashes.get((row.patient_id, c))) is not None and (c.value, key) in found
        ),
    )


# -- acting ---------------------------------------------------------------------------------


def create(db: Database, draft: Draft, now: datetime, *, actor: str) -> int:
    """A draft broadcast (nothing is sent until it is scheduled); returns its id."""
    with db.session() as session:
        broadcast = Broadcast(
            name=draft.name,
            purpose=draft.purpose.value,
            status=Status.DRAFT.value,
            cohort=draft.cohort.as_json(),
            sms=draft.sms,
            email_subject=draft.subject,
            email_body="\n\n".join(draft.paragraphs) or None,
            created_by=actor,
            created_at=now,
            recipients=0,
            messages=0,
            updated_at=now,
        )
        session.add(broadcast)
        session.flush()
        # Never the words: what it is, to whom, on which channels.
        audit.record(
            session,
            now,
            actor,
            "broadcast_created",
            broadcast=broadcast.id,
            purpose=draft.purpose.value,
            cohort=draft.cohort.as_json(),
        )
        return broadcast.id


@dataclass(frozen=True)
class Scheduled:
    status: Status
    recipients: int
    messages: int


@dataclass(frozen=True)
class Sending:
    """What scheduling needs besides the broadcast: the clinic's window and time zone."""

    window: SendWindow
    clinic_timezone: str
    approval_over: int


def schedule(
    db: Database,
    sending: Sending,
    broadcast_id: int,
    send_at: datetime | None,
    now: datetime,
    *,
    actor: str,
) -> Scheduled:
    """Send a draft at `send_at` (None: now), or ask for a second member's approval when it
    would go to more patients than the setting allows. Raises InputError (a send time in the
    past), StateError (not a draft; nobody in the cohort can be sent it) or NotFoundError."""
    if send_at is not None and send_at <= now:
        raise InputError("send_on", "the send time has passed: choose a later one, or now")
    with db.session() as session:
        broadcast = _locked(session, broadcast_id)
        if broadcast.status != Status.DRAFT.value:
            raise StateError(
                f"This broadcast is {_said(broadcast.status)}: it cannot be sent again."
            )
        broadcast.send_at, broadcast.updated_at = send_at, now
        found = audience_of(session.connection(), broadcast, sending, send_at or now)
        if not found.sends:
            raise StateError("Nobody in this cohort can be sent it: change who it is for.")
        if found.recipients > sending.approval_over:
            broadcast.status = Status.AWAITING_APPROVAL.value
            broadcast.requested_by, broadcast.requested_at = actor, now
            broadcast.recipients, broadcast.messages = found.recipients, len(found.sends)
            audit.record(
                session,
                now,
                actor,
                "broadcast_approval_requested",
                broadcast=broadcast.id,
                recipients=found.recipients,
                send_at=_iso(send_at),
            )
            return Scheduled(Status.AWAITING_APPROVAL, found.recipients, len(found.sends))
        written = _write(session, broadcast, found, sending, now, actor=actor)
        audit.record(session, now, actor, "broadcast_scheduled", **_scheduled_detail(broadcast))
        return written


def approve(
    db: Database, sending: Sending, broadcast_id: int, now: datetime, *, actor: str
) -> Scheduled:
    """A second member approves a broadcast waiting for it: its rows are written now (for the
    cohort as it is now). Its author and whoever asked may not approve it."""
    with db.session() as session:
        broadcast = _locked(session, broadcast_id)
        if broadcast.status != Status.AWAITING_APPROVAL.value:
            raise StateError(
                f"This broadcast is {_said(broadcast.status)}: there is nothing to approve."
            )
        if actor in (broadcast.created_by, broadcast.requested_by):
            raise StateError(
                "You wrote this broadcast or asked for it to be sent: another member must "
                "approve it."
            )
        if broadcast.send_at is not None and broadcast.send_at <= now:
            raise StateError(
                "Its send time has passed. Cancel it and write it again with a new time."
            )
        found = audience_of(session.connection(), broadcast, sending, broadcast.send_at or now)
        if not found.sends:
            raise StateError("Nobody in this cohort can be sent it any more; cancel it.")
        broadcast.approved_by, broadcast.approved_at = actor, now
        written = _write(session, broadcast, found, sending, now, actor=actor)
        audit.record(session, now, actor, "broadcast_approved", **_scheduled_detail(broadcast))
        return written


def cancel(db: Database, broadcast_id: int, now: datetime, *, actor: str) -> Cancelled:
    """Stop a broadcast: its messages not yet with a provider are cancelled (those already
    sent, or being sent, stay as they are). Refused once everything has gone."""
    with db.session() as session:
        broadcast = _locked(session, broadcast_id)
        if broadcast.status == Status.CANCELLED.value:
            raise StateError("This broadcast is already cancelled.")
        done = Cancelled(0, [])
        if broadcast.status == Status.SCHEDULED.value:
            done = cancel_broadcast(
                session, rules.step_key(broadcast.id), "broadcast_cancelled", now
            )
            if done.count == 0 and not done.in_flight:
                raise StateError("This broadcast has been sent: there is nothing left to cancel.")
        broadcast.status = Status.CANCELLED.value
        broadcast.cancelled_by, broadcast.cancelled_at, broadcast.updated_at = actor, now, now
        audit.record(
            session,
            now,
            actor,
            "broadcast_cancelled",
            broadcast=broadcast.id,
            cancelled=done.count,
            in_flight=len(done.in_flight),
        )
        return done


def _locked(session: Session, broadcast_id: int) -> Broadcast:
    found = session.execute(
        select(Broadcast).where(Broadcast.id == broadcast_id).with_for_update()
    ).scalar_one_or_none()
    if found is None:
        raise NotFoundError(f"no broadcast {broadcast_id}")
    return found


def audience_of(
    connection: Connection, broadcast: Broadcast, sending: Sending, at: datetime
) -> Audience:
    day = at.astimezone(zone(sending.clinic_timezone)).date()
    cohort = Cohort.from_json(broadcast.cohort)
    return audience(connection, stored.text_of(broadcast), cohort, Purpose(broadcast.purpose), day)


def _write(
    session: Session,
    broadcast: Broadcast,
    found: Audience,
    sending: Sending,
    now: datetime,
    *,
    actor: str,
) -> Scheduled:
    """The rows, each due at the send time moved into her window and past her busy days."""
    start = broadcast.send_at or now
    # Her messages from the day before (time zones) to past the furthest a move can reach
    # (a fortnight of send days, and the weekends and bank holidays between them).
    busy_until = start + timedelta(days=rules.CAP_SEARCH_DAYS + 7)
    due = stored.messages_due(
        session.connection(),
        start - timedelta(days=1),
        busy_until,
        {send[0] for send in found.sends},
    )
    placed: dict[int, datetime] = {}
    opens: dict[str, datetime] = {}  # the window's first moment from `start`, by time zone
    sends = []
    for patient_id, channel, enrollment_id, version, timezone in found.sends:
        when = placed.get(patient_id)
        if when is None:
            tz = zone(timezone)
            if timezone not in opens:
                opens[timezone] = sending.window.next_open(start, tz)
            busy = frozenset(d.astimezone(tz).date() for d in due.get(patient_id, ()))
            when = rules.due_at(start, tz, sending.window, busy, opens[timezone])
            placed[patient_id] = when
        sends.append((enrollment_id, channel, version, when, when + rules.VALID_FOR))
    kind = Purpose(broadcast.purpose).kind
    written = stored.write_sends(session, rules.step_key(broadcast.id), kind, sends, now)
    broadcast.status = Status.SCHEDULED.value
    broadcast.scheduled_by, broadcast.scheduled_at, broadcast.updated_at = actor, now, now
    broadcast.recipients, broadcast.messages = found.recipients, written
    log.info(
        "broadcast %d scheduled: %d messages to %d patients",
        broadcast.id,
        written,
        found.recipients,
        extra={"event": "broadcasts.scheduled"},
    )
    return Scheduled(Status.SCHEDULED, found.recipients, written)


def _scheduled_detail(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "broadcast": broadcast.id,
        "recipients": broadcast.recipients,
        "messages": broadcast.messages,
        "send_at": _iso(broadcast.send_at),
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _said(status: str) -> str:
    return status.replace("_", " ")


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    broadcast: Broadcast
    counts: rules.Counts

    @property
    def shown_status(self) -> str:
        return rules.shown_status(Status(self.broadcast.status), self.counts)


def listing(session: Session, *, before: int | None = None, limit: int = PAGE) -> list[Listed]:
    """Broadcasts, newest first, with what became of their messages."""
    query = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)
    if before is not None:
        query = query.where(Broadcast.id < before)
    found = list(session.execute(query).scalars())
    counts = stored.status_counts(session.connection(), [b.id for b in found])
    return [Listed(b, rules.Counts.of(counts[b.id])) for b in found]


def one(session: Session, broadcast_id: int) -> Listed:
    found = session.get(Broadcast, broadcast_id)
    if found is None:
        raise NotFoundError(f"no broadcast {broadcast_id}")
    counts = stored.status_counts(session.connection(), [found.id])
    return Listed(found, rules.Counts.of(counts[found.id]))


def names(session: Session, keys: Sequence[str]) -> dict[str, str]:
    """Each broadcast's name by its step key (for logs and timelines)."""
    return {key: t.name for key, t in stored.texts_for_keys(session.connection(), keys).items()}


def choices(session: Session, limit: int = 100) -> list[tuple[int, str]]:
    """The newest broadcasts that have messages, by id and name (the message log's filter)."""
    found = session.execute(
        select(Broadcast.id, Broadcast.name)
        .where(Broadcast.scheduled_at.is_not(None))
        .order_by(Broadcast.id.desc())
        .limit(limit)
    )
    return [(int(i), str(name)) for i, name in found]
