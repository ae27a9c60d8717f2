"""The reports' rollups: counts a clinic-local day in `report_daily`, so a report over a year of
ten million sends reads a few hundred thousand small rows, never the outbox.

Each clinic-local day's counts are rebuilt from the tables they come from, through an index on
their time (docs/decisions.md, "Reports from daily rollups"):

- messages: outbox rows due that day (`ix_scheduled_messages_due_at`), by campaign line, step,
  channel and status. A status that changes later (a delivery receipt the next morning, a
  reconciled unknown) is caught by rebuilding the day again: the frequent job rebuilds the last
  RECENT_DAYS days, the daily one the last DEEP_DAYS.
- booking-link clicks (the audit rows of `/b/<token>`), replies (`inbound_messages`) and
  opt-outs (withdrawals in `consent_events`), by the day they happened, each counted against the
  message it followed (campaigns.rules.reports.attribute);
- enrolments by the day they were made, by campaign and source.

A day is rebuilt in one short transaction under a lock of its own, and only the counts that
changed are written: rebuilding is idempotent, two workers never interleave, and an idle day
costs its reads. Where each enrollment stands now (`stage:`) is a separate snapshot, taken
hourly for the clinic's today (`snapshot_stages`).
"""

from __future__ import annotations

import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select, text, tuple_, update
from sqlalchemy.orm import Session

from campaigns.periodic import LOCK_SPACE
from campaigns.rules import reports as rules
from campaigns.rules.pregnancy import TrimesterConvention
from campaigns.rules.vocabulary import ConsentPurpose, StepKind
from campaigns.rules.window import zone
from campaigns.storage.db import Database
from campaigns.storage.models import (
    BOOKING_CLICKED,
    AuditEvent,
    ConsentEvent,
    Enrollment,
    InboundMessage,
    ReportDaily,
    ScheduledMessage,
)

SM = ScheduledMessage
#: The frequent job rebuilds today and the days before it: late receipts and reconciled sends.
RECENT_DAYS = 3
#: The daily job goes further back: a message retried or settled by staff weeks later.
DEEP_DAYS = 35
#: Patients whose sends are read in one statement, to say which message an event followed.
CHUNK = 500
#: Not a job's name: the periodic runner holds each job's own lock (campaigns.periodic) on
#: another connection while the job runs.
_LOCK_KEY = zlib.crc32(b"report_daily writes") & 0x7FFFFFFF
Key = tuple[str, str, str, str]  # campaign line, step, channel, metric


@dataclass(frozen=True)
class Refreshed:
    days: int
    changed: int

    def as_dict(self) -> dict[str, int]:
        return {"days": self.days, "changed": self.changed}


def bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """The instants (UTC) a clinic-local day starts and ends (23 or 25 hours on a clock change)."""
    tz = zone(timezone)
    start = datetime.combine(day, time(), tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tz).astimezone(UTC)
    return start, end


def local_today(now: datetime, timezone: str) -> date:
    return now.astimezone(zone(timezone)).date()


def refresh(db: Database, now: datetime, timezone: str, days: int = RECENT_DAYS) -> Refreshed:
    """Rebuild the counts of the last `days` clinic-local days, today included."""
    today = local_today(now, timezone)
    changed = 0
    for back in range(days - 1, -1, -1):
        changed += refresh_day(db, today - timedelta(days=back), timezone)
    return Refreshed(days, changed)


def refresh_day(db: Database, day: date, timezone: str) -> int:
    """Rebuild one day's counts (everything but the stage snapshot); how many rows changed."""
    start, end = bounds(day, timezone)
    with db.session() as session:
        _lock(session)
        counts: Counter[Key] = Counter()
        _messages(session, start, end, counts)
        _events(session, start, end, counts)
        _enrolments(session, start, end, counts)
        return _write(session, day, counts, stages=False)


def snapshot_stages(
    db: Database,
    now: datetime,
    timezone: str,
    convention: TrimesterConvention = TrimesterConvention.NHS,
) -> int:
    """Where every enrollment stands today, by campaign: today's `stage:` counts."""
    today = local_today(now, timezone)
    query = select(
        Enrollment.campaign,
        Enrollment.status,
        Enrollment.birth_date.is_not(None),
        Enrollment.edd,
        func.count(),
    ).group_by(
        Enrollment.campaign, Enrollment.status, Enrollment.birth_date.is_not(None), Enrollment.edd
    )
    with db.session() as session:
        _lock(session)
        counts: Counter[Key] = Counter()
        for campaign, status, born, edd, count in session.execute(query):
            stage = rules.stage_of(str(status), bool(born), edd, today, convention)
            counts[campaign, "", "", rules.STAGE + stage] += int(count)
        return _write(session, today, counts, stages=True)


def _lock(session: Session) -> None:
    """One rebuild at a time (two workers, or the job beside a benchmark): PostgreSQL holds
    the lock to the end of the transaction; SQLite's writes are one at a time anyway."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:s, :k)"), {"s": LOCK_SPACE, "k": _LOCK_KEY}
        )


# -- messages ----------------------------------------------------------------------------------


def _messages(session: Session, start: datetime, end: datetime, counts: Counter[Key]) -> None:
    # A staff reply's key is its own (one a reply): they are one step, folded in the query.
    step = case((SM.kind == StepKind.STAFF_REPLY.value, ""), else_=SM.step_key)
    query = (
        select(Enrollment.campaign, step, SM.channel, SM.kind, SM.status, func.count())
        .select_from(SM)
        .outerjoin(Enrollment, Enrollment.id == SM.enrollment_id)
        .where(SM.due_at >= start, SM.due_at < end)
        .group_by(Enrollment.campaign, step, SM.channel, SM.kind, SM.status)
    )
    for campaign, step_key, channel, kind, status, count in session.execute(query):
        line, shown = rules.line_of(campaign, step_key, kind)
        counts[line, shown, channel, rules.MESSAGE + str(status)] += int(count)


# -- events: clicks, replies, opt-outs ------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    patient_id: int | None
    anchor: datetime  # what it is counted against: when it happened, or the link was made
    channel: str | None  # the channel of the message it may follow (None: any)
    metric: str
    own_channel: str  # counted under this channel when it followed no message


def _events(session: Session, start: datetime, end: datetime, counts: Counter[Key]) -> None:
    events = [*_clicks(session, start, end), *_replies(session, start, end)]
    events += _opt_outs(session, start, end)
    if not events:
        return
    sends = _sends_of(session, events)
    for event in events:
        found = (
            rules.attribute(event.anchor, event.channel, sends.get(event.patient_id, []))
            if event.patient_id is not None
            else None
        )
        if found is None:
            counts[rules.NO_MESSAGE, "", event.own_channel, event.metric] += 1
        else:
            counts[found.campaign, found.step, found.channel, event.metric] += 1


def _clicks(session: Session, start: datetime, end: datetime) -> list[_Event]:
    rows = session.execute(
        select(AuditEvent.patient_id, AuditEvent.occurred_at, AuditEvent.detail).where(
            AuditEvent.action == BOOKING_CLICKED,
            AuditEvent.occurred_at >= start,
            AuditEvent.occurred_at < end,
        )
    )
    return [
        _Event(patient_id, _issued(detail) or at, "sms", rules.CLICK, "sms")
        for patient_id, at, detail in rows
    ]


def _issued(detail: Any) -> datetime | None:
    """When the clicked link was made (recorded with the click since reports began)."""
    value = detail.get("issued") if isinstance(detail, dict) else None
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _replies(session: Session, start: datetime, end: datetime) -> list[_Event]:
    rows = session.execute(
        select(InboundMessage.patient_id, InboundMessage.received_at, InboundMessage.intent).where(
            InboundMessage.received_at >= start, InboundMessage.received_at < end
        )
    )
    return [
        _Event(patient_id, at, "sms", rules.REPLY + (intent or "unrecognised"), "sms")
        for patient_id, at, intent in rows
    ]


def _opt_outs(session: Session, start: datetime, end: datetime) -> list[_Event]:
    rows = session.execute(
        select(
            ConsentEvent.patient_id,
            ConsentEvent.occurred_at,
            ConsentEvent.channel,
            ConsentEvent.source,
        ).where(
            ConsentEvent.granted.is_(False),
            ConsentEvent.purpose == ConsentPurpose.PROGRAMME.value,
            ConsentEvent.occurred_at >= start,
            ConsentEvent.occurred_at < end,
        )
    )
    return [
        _Event(patient_id, at, channel, rules.OPT_OUT + rules.route_of(source), channel or "")
        for patient_id, at, channel, source in rows
    ]


def _sends_of(session: Session, events: Sequence[_Event]) -> dict[int | None, list[rules.Sent]]:
    """Each patient's messages sent in the time the events may follow, in time order."""
    patients = sorted({e.patient_id for e in events if e.patient_id is not None})
    earliest = min(e.anchor for e in events) - rules.AFTER
    latest = max(e.anchor for e in events)
    found: dict[int | None, list[rules.Sent]] = defaultdict(list)
    for first in range(0, len(patients), CHUNK):
        rows = session.execute(
            select(
                Enrollment.patient_id,
                SM.sent_at,
                SM.channel,
                Enrollment.campaign,
                SM.step_key,
                SM.kind,
            )
            .join(Enrollment, Enrollment.id == SM.enrollment_id)
            .where(
                Enrollment.patient_id.in_(patients[first : first + CHUNK]),
                SM.sent_at >= earliest,
                SM.sent_at <= latest,
            )
        )
        for patient_id, at, channel, campaign, step_key, kind in rows:
            line, step = rules.line_of(campaign, step_key, kind)
            if at is not None:
                found[patient_id].append(rules.Sent(at, channel, line, step))
    for sends in found.values():
        sends.sort()
    return found


# -- enrolments ----------------------------------------------------------------------------------


def _enrolments(session: Session, start: datetime, end: datetime, counts: Counter[Key]) -> None:
    """Enrolments made that day, by campaign and source. Enrollments do not keep a source: the
    programme consent written with the enrolment (same patient, same instant) says it."""
    source = (
        select(ConsentEvent.source)
        .where(
            ConsentEvent.patient_id == Enrollment.patient_id,
            ConsentEvent.occurred_at == Enrollment.enrolled_at,
            ConsentEvent.purpose == ConsentPurpose.PROGRAMME.value,
            ConsentEvent.granted.is_(True),
        )
        .order_by(ConsentEvent.id)
        .limit(1)
        .scalar_subquery()
    )
    made = (
        select(Enrollment.campaign.label("campaign"), source.label("source"))
        .where(Enrollment.enrolled_at >= start, Enrollment.enrolled_at < end)
        .subquery()
    )
    query = select(made.c.campaign, made.c.source, func.count()).group_by(
        made.c.campaign, made.c.source
    )
    for campaign, found, count in session.execute(query):
        counts[campaign, "", "", rules.ENROLMENT + (found or "unknown")] += int(count)


# -- writing -----------------------------------------------------------------------------------


def _write(session: Session, day: date, counts: Counter[Key], *, stages: bool) -> int:
    """Make the day's stored counts (its stage snapshot, or everything else) equal `counts`,
    writing only what differs; how many rows changed."""
    is_stage = ReportDaily.metric.startswith(rules.STAGE)
    stored = {
        (campaign, step, channel, metric): int(count)
        for campaign, step, channel, metric, count in session.execute(
            select(
                ReportDaily.campaign,
                ReportDaily.step_key,
                ReportDaily.channel,
                ReportDaily.metric,
                ReportDaily.count,
            ).where(ReportDaily.day == day, is_stage if stages else ~is_stage)
        )
    }
    wanted = {key: count for key, count in counts.items() if count}
    gone = [key for key in stored if key not in wanted]
    new = [key for key in wanted if key not in stored]
    moved = [key for key in wanted if key in stored and stored[key] != wanted[key]]
    _delete(session, day, gone)
    if new:
        session.execute(
            insert(ReportDaily),
            [_row(day, key, wanted[key]) for key in new],
        )
    for key in moved:
        session.execute(update(ReportDaily).where(*_match(day, key)).values(count=wanted[key]))
    return len(gone) + len(new) + len(moved)


def _delete(session: Session, day: date, keys: Iterable[Key]) -> None:
    listed = list(keys)
    for first in range(0, len(listed), CHUNK):
        session.execute(
            delete(ReportDaily).where(
                ReportDaily.day == day,
                tuple_(
                    ReportDaily.campaign,
                    ReportDaily.step_key,
                    ReportDaily.channel,
                    ReportDaily.metric,
                ).in_(listed[first : first + CHUNK]),
            )
        )


def _match(day: date, key: Key) -> list[Any]:
    campaign, step, channel, metric = key
    return [
        and_(
            ReportDaily.day == day,
            ReportDaily.campaign == campaign,
            ReportDaily.step_key == step,
            ReportDaily.channel == channel,
            ReportDaily.metric == metric,
        )
    ]


def _row(day: date, key: Key, count: int) -> dict[str, Any]:
    campaign, step, channel, metric = key
    return {
        "day": day,
        "campaign": campaign,
        "step_key": step,
        "channel": channel,
        "metric": metric,
        "count": count,
    }
