"""The message log's reads: every outbox row, newest first, filtered and paged by keyset, and one
message's whole story (its text, each try with the provider's id and error, delivery events).

Newest first is `id DESC`: ids only grow, the primary key serves the order, and a page is "the
next 100 below the last id shown" whatever else changes meanwhile (no OFFSET, no row shown twice
or skipped). Which index serves each filter is in docs/decisions.md ("Message log at 10 million
rows"). Patient names and texts only for roles that may see patient data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, or_, select, union_all
from sqlalchemy.orm import Session

from campaigns.rules.broadcasts import Text, step_key
from campaigns.rules.contacts import normalise_phone
from campaigns.rules.errors import InputError
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.storage.broadcasts import texts_for_keys
from campaigns.storage.models import (
    IS_BROADCAST,
    AuditEvent,
    CampaignVersion,
    Enrollment,
    Patient,
    ProviderEvent,
    ScheduledMessage,
)

SM = ScheduledMessage
PAGE = 100
#: At most this many patients match a name search (the log shows their messages).
PATIENT_MATCHES = 50
#: Audit actions that ended one try of a message and started another (or settled it by hand).
TRY_ACTIONS = ("requeued", "marked_sent", "marked_not_sent", "cancelled_by_staff")


@dataclass(frozen=True)
class Filters:
    statuses: tuple[MessageStatus, ...] = ()
    channel: Channel | None = None
    provider: str | None = None
    campaign: str | None = None
    step: str | None = None
    since: date | None = None  # due on or after (UTC day)
    until: date | None = None  # due on or before (UTC day)
    patient: str | None = None  # an id ("#12" or "12"), a phone number in any form, or a name
    broadcast: int | None = None  # a broadcast's messages (its step key)

    def query_args(self) -> list[tuple[str, str]]:
        """These filters as the page's query string (for links that keep them)."""
        args = [("status", s.value) for s in self.statuses]
        names = (
            "channel",
            "provider",
            "campaign",
            "step",
            "broadcast",
            "since",
            "until",
            "patient",
        )
        for name in names:
            value = getattr(self, name)
            if value:
                args.append((name, value.isoformat() if isinstance(value, date) else str(value)))
        return args

    @property
    def any(self) -> bool:
        return bool(self.query_args())


def parse_filters(
    *,
    statuses: list[str],
    channel: str = "",
    provider: str = "",
    campaign: str = "",
    step: str = "",
    since: str = "",
    until: str = "",
    patient: str = "",
    broadcast: str = "",
) -> Filters:
    """The log's filters from its form; InputError names the field in staff words."""
    chosen: list[MessageStatus] = []
    for value in statuses:
        for part in value.split(","):
            if not part.strip():
                continue
            try:
                chosen.append(MessageStatus(part.strip()))
            except ValueError:
                raise InputError("Status", f"{part.strip()[:20]!r} is not a status") from None
    picked: Channel | None = None
    if channel.strip():
        try:
            picked = Channel(channel.strip())
        except ValueError:
            raise InputError("Channel", f"{channel.strip()[:20]!r} is not SMS or email") from None
    start = _day(since, "From")
    end = _day(until, "To")
    if start and end and end < start:
        raise InputError("To", "is before From")
    if broadcast.strip() and not broadcast.strip().isdigit():
        raise InputError("Broadcast", "choose one of the broadcasts listed")
    return Filters(
        statuses=tuple(dict.fromkeys(chosen)),
        channel=picked,
        provider=provider.strip()[:32] or None,
        campaign=campaign.strip()[:64] or None,
        step=step.strip()[:64] or None,
        since=start,
        until=end,
        patient=patient.strip()[:200] or None,
        broadcast=int(broadcast.strip()) if broadcast.strip() else None,
    )


def _day(text: str, name: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(name, f"{text.strip()[:20]!r} is not a date like 2027-03-01") from None


@dataclass(frozen=True)
class LogRow:
    id: int
    status: str
    reason: str | None
    channel: str
    step: str
    campaign: str
    provider: str | None
    error_code: str | None
    attempts: int
    due_at: datetime
    sent_at: datetime | None
    updated_at: datetime
    patient_id: int | None  # None: not shown to this role
    patient_name: str | None
    timezone: str
    text: str | None = None  # the SMS's text or the email's subject, once written
    broadcast: str | None = None  # the broadcast's name, for a broadcast's message


@dataclass(frozen=True)
class Page:
    rows: list[LogRow]
    next_before: int | None  # the keyset of the next page; None: this is the last
    patients_matched: int | None = None  # a patient filter's matches (None: no such filter)


def page(
    session: Session,
    filters: Filters,
    *,
    before: int | None = None,
    limit: int = PAGE,
    with_patients: bool,
) -> Page:
    """One page of the log, newest first, below `before` (an id)."""
    query, matched = statement(
        session, filters, before=before, limit=limit, with_patients=with_patients
    )
    if query is None:
        return Page([], None, matched)
    found = session.execute(query).all()
    rows = [_row(r, with_patients) for r in found[:limit]]
    named = texts_for_keys(session.connection(), {r.step for r in rows})
    rows = [replace(r, broadcast=named[r.step].name) if r.step in named else r for r in rows]
    more = len(found) > limit
    return Page(rows, rows[-1].id if more and rows else None, matched)


def statement(
    session: Session,
    filters: Filters,
    *,
    before: int | None = None,
    limit: int = PAGE,
    with_patients: bool,
) -> tuple[Select[Any] | None, int | None]:
    """The page's query (one row more than a page, to know whether another follows) and how
    many patients a patient filter matched; no query when no patient matched.

    The page's ids are found first, over the outbox alone (and enrollments for a campaign),
    then only those rows are joined to their patients."""
    if filters.patient and not with_patients:
        raise InputError("Patient", "your role does not show patients, so it cannot filter by one")
    matched: int | None = None
    conditions: list[Any] = []
    if filters.patient:
        patient_ids = _patients(session, filters.patient)
        matched = len(patient_ids)
        if not patient_ids:
            return None, 0
        enrollment_ids = select(Enrollment.id).where(Enrollment.patient_id.in_(patient_ids))
        conditions.append(SM.enrollment_id.in_(enrollment_ids))
    if before is not None:
        conditions.append(SM.id < before)
    if len(filters.statuses) > 1:
        # Each status's newest rows from its own index, merged: an IN over the statuses would
        # walk the primary key past every row of the other statuses.
        branches = [
            _ids(replace(filters, statuses=(status,)), conditions, limit).subquery()
            for status in filters.statuses
        ]
        merged = union_all(*(select(branch.c.id) for branch in branches)).subquery()
        ids = select(merged.c.id).order_by(merged.c.id.desc()).limit(limit + 1)
    else:
        ids = _ids(filters, conditions, limit)
    query = _base(with_patients).where(SM.id.in_(ids.scalar_subquery()))
    return query.order_by(SM.id.desc()), matched


def _ids(filters: Filters, conditions: list[Any], limit: int) -> Select[Any]:
    """One page of ids for filters with at most one status, newest first, read from the index
    that fits (docs/decisions.md, "Message log at 10 million rows")."""
    query = select(SM.id)
    if filters.campaign:
        query = query.join(Enrollment, Enrollment.id == SM.enrollment_id)
    query = _filtered(query, replace(filters, statuses=())).where(*conditions)
    dated = filters.since is not None or filters.until is not None
    if filters.statuses:
        # A range (status >= X AND status <= X), not an equality, and ordered by status too:
        # then no plan but a backward read of (status, id) gives this order. With `=`,
        # PostgreSQL may walk the primary key instead, trusting a status to be spread evenly
        # over the ids, and step over the newest rows (the planned ones) to fill the page.
        status = filters.statuses[0].value
        query = query.where(SM.status >= status, SM.status <= status)
        if not dated:
            return query.order_by(SM.status.desc(), SM.id.desc()).limit(limit + 1)
    if dated and not filters.patient:
        # The same order, written so that PostgreSQL cannot walk the primary key: it would
        # expect a date range's rows anywhere, and step over every newer row to reach them.
        # Read from ix_scheduled_messages_due_at instead, then sort the range's rows.
        return query.order_by((SM.id + 0).desc()).limit(limit + 1)
    return query.order_by(SM.id.desc()).limit(limit + 1)


def _base(with_patients: bool) -> Select[Any]:
    columns: list[Any] = [
        SM.id,
        SM.status,
        SM.reason,
        SM.channel,
        SM.step_key,
        Enrollment.campaign,
        SM.provider,
        SM.error_code,
        SM.attempts,
        SM.due_at,
        SM.sent_at,
        SM.updated_at,
    ]
    if with_patients:
        columns += [
            Patient.id.label("patient_id"),
            Patient.name,
            Patient.timezone,
            SM.body,
            SM.subject,
        ]
        return (
            select(*columns)
            .join(Enrollment, Enrollment.id == SM.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
        )
    return select(*columns).join(Enrollment, Enrollment.id == SM.enrollment_id)


def _filtered(query: Select[Any], filters: Filters) -> Select[Any]:
    """The filters other than the patient, as conditions (the query must join enrollments
    for a campaign)."""
    if len(filters.statuses) == 1:
        query = query.where(SM.status == filters.statuses[0].value)
    elif filters.statuses:
        query = query.where(SM.status.in_([s.value for s in filters.statuses]))
    if filters.channel is not None:
        query = query.where(SM.channel == filters.channel.value)
    if filters.provider:
        if filters.provider == "none":
            query = query.where(SM.provider.is_(None))
        else:
            query = query.where(SM.provider == filters.provider)
    if filters.campaign:
        query = query.where(Enrollment.campaign == filters.campaign)
    if filters.step:
        query = query.where(SM.step_key == filters.step)
    if filters.broadcast is not None:
        # Written with the index's own condition, so its rows come from it alone.
        query = query.where(IS_BROADCAST, SM.step_key == step_key(filters.broadcast))
    if filters.since:
        query = query.where(SM.due_at >= datetime.combine(filters.since, time(), UTC))
    if filters.until:
        end = datetime.combine(filters.until, time(), UTC) + timedelta(days=1)
        query = query.where(SM.due_at < end)
    return query


def _patients(session: Session, text: str) -> list[int]:
    """Patients a search means: "#12" (or a short number) is an id; something that reads as a
    phone number (07..., +44 7..., with spaces) is matched exactly; anything else is a name."""
    cleaned = text.strip()
    bare = cleaned.removeprefix("#").strip()
    if bare.isdigit() and len(bare) < 9:
        return [int(bare)] if session.get(Patient, int(bare)) is not None else []
    if _looks_like_phone(cleaned):
        try:
            phone = normalise_phone(cleaned, field="Patient")
        except InputError:
            return []
        return list(session.execute(select(Patient.id).where(Patient.phone == phone)).scalars())
    like = f"%{cleaned}%"
    return list(
        session.execute(
            select(Patient.id)
            .where(or_(Patient.name.ilike(like), Patient.email.ilike(like)))
            .order_by(Patient.id.desc())
            .limit(PATIENT_MATCHES)
        ).scalars()
    )


def _looks_like_phone(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return digits >= 9 and all(c.isdigit() or c in "+ ()-." for c in text)


def _row(r: Any, with_patients: bool) -> LogRow:
    return LogRow(
        id=r.id,
        status=str(r.status),
        reason=r.reason,
        channel=r.channel,
        step=r.step_key,
        campaign=r.campaign,
        provider=r.provider,
        error_code=r.error_code,
        attempts=r.attempts,
        due_at=r.due_at,
        sent_at=r.sent_at,
        updated_at=r.updated_at,
        patient_id=r.patient_id if with_patients else None,
        patient_name=r.name if with_patients else None,
        timezone=r.timezone if with_patients else "Europe/London",
        text=(r.body if r.channel == Channel.SMS.value else r.subject) if with_patients else None,
    )


# -- one message --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Try:
    """One try of a message at a provider, as far as we know it."""

    number: int
    provider: str | None
    provider_id: str | None
    status: str
    error_code: str | None
    meaning: str | None
    ended: str  # how it ended, in staff words
    at: datetime | None
    by: str | None  # the staff member who ended it by hand (retry, marks)
    note: str | None


@dataclass(frozen=True)
class Event:
    at: datetime
    provider: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Message:
    message: ScheduledMessage
    campaign: str
    patient: Patient | None  # None for a role without patient data
    timezone: str
    enrollment: Enrollment
    tries: list[Try]
    events: list[Event]
    error_meaning: str | None
    reason_meaning: str | None
    #: The campaign version the message is (or was) rendered from; None for a staff reply.
    version: CampaignVersion | None = None
    #: A broadcast's words, for a broadcast's message (None: a campaign step or a reply).
    broadcast: Text | None = None


def _version(session: Session, row: ScheduledMessage, campaign: str) -> CampaignVersion | None:
    if ":" in row.step_key:  # a staff reply or broadcast: its own words, no campaign version
        return None
    if row.content_version is not None:
        return session.get(CampaignVersion, row.content_version)
    return session.scalars(  # written before versions: the campaign's first
        select(CampaignVersion)
        .where(CampaignVersion.campaign == campaign)
        .order_by(CampaignVersion.number)
        .limit(1)
    ).first()


def message(session: Session, message_id: int, *, with_patients: bool) -> Message | None:
    found = session.execute(
        select(SM, Enrollment, Patient)
        .join(Enrollment, Enrollment.id == SM.enrollment_id)
        .join(Patient, Patient.id == Enrollment.patient_id)
        .where(SM.id == message_id)
    ).one_or_none()
    if found is None:
        return None
    row, enrollment, patient = found
    events = [
        Event(e.received_at, e.provider, e.kind, _detail(e.detail))
        for e in session.execute(
            select(ProviderEvent)
            .where(ProviderEvent.message_id == message_id)
            .order_by(ProviderEvent.received_at, ProviderEvent.id)
        ).scalars()
    ]
    settled = session.execute(
        select(AuditEvent)
        .where(AuditEvent.message_id == message_id, AuditEvent.action.in_(TRY_ACTIONS))
        .order_by(AuditEvent.id)
    ).scalars()
    tries = _tries(row, list(settled))
    return Message(
        message=row,
        campaign=enrollment.campaign,
        patient=patient if with_patients else None,
        timezone=patient.timezone,
        enrollment=enrollment,
        tries=tries,
        events=events,
        error_meaning=error_meaning(row.provider, row.error_code),
        reason_meaning=reason_meaning(row.reason),
        version=_version(session, row, enrollment.campaign),
        broadcast=texts_for_keys(session.connection(), [row.step_key]).get(row.step_key),
    )


def _tries(row: ScheduledMessage, settled: list[AuditEvent]) -> list[Try]:
    """Earlier tries from the audit rows that closed them (each keeps what the row said then),
    then the current one (if the message ever reached the send path)."""
    tries: list[Try] = []
    for event in settled:
        d = event.detail or {}
        tried = d.get("provider") or d.get("provider_id") or d.get("error_code")
        if not tried and event.action not in ("marked_sent", "marked_not_sent"):
            continue
        tries.append(
            Try(
                number=len(tries) + 1,
                provider=d.get("provider"),
                provider_id=d.get("provider_id"),
                status=str(d.get("previous_status") or ""),
                error_code=d.get("error_code"),
                meaning=error_meaning(d.get("provider"), d.get("error_code")),
                ended=_ENDED.get(event.action, event.action),
                at=event.occurred_at,
                by=event.actor,
                note=d.get("note"),
            )
        )
    started = row.attempts or row.provider_id or row.error_code or row.sent_at
    if started and row.status not in (MessageStatus.PENDING, MessageStatus.CANCELLED):
        tries.append(
            Try(
                number=len(tries) + 1,
                provider=row.provider,
                provider_id=row.provider_id,
                status=str(row.status),
                error_code=row.error_code,
                meaning=error_meaning(row.provider, row.error_code),
                ended="latest",
                at=row.sent_at or row.updated_at,
                by=None,
                note=None,
            )
        )
    return tries


_ENDED = {
    "requeued": "retried by staff",
    "marked_sent": "marked sent by staff",
    "marked_not_sent": "marked not sent by staff",
    "cancelled_by_staff": "cancelled by staff",
}


def _detail(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    return ", ".join(f"{k}: {v}" for k, v in sorted(detail.items()) if v not in (None, ""))


# -- what error codes and reasons mean --------------------------------------------------------

#: Twilio error codes we act on (campaigns/providers/twilio.py TWILIO_ERRORS), in staff words.
TWILIO_MEANINGS = {
    "20003": "Twilio refused our credentials: texts are halted until an operator fixes them",
    "20404": "Twilio does not know our account or messaging service: texts are halted",
    "20429": "Twilio was too busy; it was tried again later",
    "21211": "not a valid phone number: the number is marked as not working",
    "21408": "texts to this country are not enabled on our account: texts are halted",
    "21606": "our sending number cannot send texts: texts are halted",
    "21608": "our Twilio account is a trial one and cannot text this number: texts are halted",
    "21610": "she replied STOP to our number: no more texts are sent to her",
    "21612": "Twilio cannot route between our number and hers: texts are halted",
    "21614": "not a mobile number: the number is marked as not working",
    "21617": "the text was too long for Twilio (never sent again)",
    "21635": "a landline: the number is marked as not working",
    "30001": "Twilio's queue was full; it was tried again later",
    "30002": "our Twilio account is suspended: texts are halted",
    "30003": "her phone was off or out of signal; tried again later (a few times)",
    "30004": "blocked by her or her network: treated as an opt-out",
    "30005": "the number is unknown or no longer in use: marked as not working",
    "30006": "a landline or a network that cannot take texts: marked as not working",
    "30007": "her network filtered it as spam (never sent again as it is)",
    "30008": "her network could not say what went wrong; tried again later",
    "30032": "our toll-free number is not verified: texts are halted",
    "30034": "our number is not registered for business texting: texts are halted",
    "30500": "a fault at Twilio; tried again later",
}
#: SendGrid answers (HTTP statuses from its API) and the connection errors of every provider.
SENDGRID_MEANINGS = {
    "400": "SendGrid refused the email as written (or the address)",
    "401": "SendGrid refused our credentials: emails are halted until an operator fixes them",
    "403": "SendGrid refused our sender or credentials: emails are halted",
    "413": "the email was too large for SendGrid (never sent again)",
    "429": "SendGrid was too busy; it was tried again later",
    "500": "a fault at SendGrid; tried again later",
    "502": "a fault at SendGrid; tried again later",
    "503": "SendGrid was unavailable; tried again later",
}
COMMON_MEANINGS = {
    "timeout": "no answer in time: it may or may not have gone, so the provider is asked",
    "no_message_id": "accepted without an id: the provider is asked whether it went",
    "connection_error": "could not reach the provider; tried again later",
    "connection_refused": "could not reach the provider; tried again later",
    "connect_timeout": "could not reach the provider in time; tried again later",
    "connection_lost": "the connection broke; tried again later",
    "bad_response": "the provider's answer could not be read; tried again later",
    "tls_failed": "a secure connection to the provider failed; tried again later",
    "disconnected": "the mail server's connection broke",
    "starttls": "the mail server's secure connection is misconfigured: emails are halted",
    "undelivered": "the network could not deliver it",
    "failed": "the provider could not send it",
}


def error_meaning(provider: str | None, code: str | None) -> str | None:
    """An error code in staff words; None without a code, a plain note for one we do not know."""
    if not code:
        return None
    if provider == "twilio" and code in TWILIO_MEANINGS:
        return TWILIO_MEANINGS[code]
    if provider == "sendgrid" and code in SENDGRID_MEANINGS:
        return SENDGRID_MEANINGS[code]
    if code in COMMON_MEANINGS:
        return COMMON_MEANINGS[code]
    if code in TWILIO_MEANINGS and provider in (None, "twilio"):
        return TWILIO_MEANINGS[code]
    return "a code we do not act on specially: see the provider's documentation"


#: Why a message is in its state, in staff words (the row's reason).
REASONS = {
    "requeued": "retried by staff",
    "marked_sent": "marked sent by staff after checking the provider",
    "marked_not_sent": "marked not sent by staff after checking the provider",
    "cancelled_by_staff": "cancelled by staff",
    "broadcast_cancelled": "its broadcast was cancelled by staff",
    "discreet": "she asked for discreet messages, and this one mentions pregnancy",
    "step_removed": "the campaign's new version no longer has this step or channel",
    "step_changed": "the campaign's new version changed what kind of message this step is",
    "campaign_paused": "the campaign is paused for everyone",
    "campaign_ended": "the campaign has ended for everyone",
    "sendgrid_bounce": "the email bounced: the address does not exist or refused it",
    "sendgrid_blocked": "the receiving mail server blocked the email",
    "sendgrid_dropped": "SendGrid dropped it (unsubscribed, bounced before, or invalid)",
    "needs_review": "the provider could not say whether it went: staff decide",
    "worker_lost": "the sending process stopped mid-way; the provider is asked",
    "provider_outcome_unknown": "no answer from the provider: it is asked whether it went",
    "reconciled_sent": "the provider's records show it went",
    "reconciled_not_sent": "the provider's records show it did not go: sent again",
    "attempts_exhausted": "tried the most times allowed, then given up",
    "opted_out": "she has opted out at the provider",
    "invalid_address": "the address does not work",
    "no_address": "she has no address on this channel",
    "no_consent": "she has not consented to this",
    "suppressed": "the address is on the do-not-contact list",
    "safety_hold": "held after a danger sign (nothing that sells for 30 days)",
    "window_closed": "waiting for the send window to open",
    "channel_halted": "the channel is halted (provider account problem)",
    "retry": "a temporary error: tried again later",
    "expired_before_send": "its moment passed before it could go",
    "render_error": "the text could not be made from its template",
}


def reason_meaning(reason: str | None) -> str | None:
    if not reason:
        return None
    if reason in REASONS:
        return REASONS[reason]
    if reason.startswith("twilio_"):
        return "Twilio reported it " + ("failed" if reason == "twilio_failed" else "undelivered")
    if reason.startswith("resend_after_"):
        return "a temporary delivery error: sent again later"
    if reason.startswith("enrollment_"):
        return "her programme is " + reason.removeprefix("enrollment_").replace("_", " ")
    return reason.replace("_", " ")
