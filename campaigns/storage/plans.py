"""Planned sends as outbox rows: writing a plan in bulk (COPY on PostgreSQL), cancelling the
rows a change stops, and reading what a patient was already sent (for the next plan)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, not_, or_, select, update
from sqlalchemy.orm import Session

from campaigns.rules.planning import PlannedSend
from campaigns.rules.vocabulary import CANCELLABLE, Channel, MessageStatus, StepKind
from campaigns.storage.bulk import NULL, copy_lines, is_postgres, iso, write_rows
from campaigns.storage.db import among
from campaigns.storage.models import IS_BROADCAST, Enrollment, ScheduledMessage

PLAN_COLUMNS = (
    "enrollment_id",
    "step_key",
    "channel",
    "kind",
    "schedule_version",
    "status",
    "reason",
    "due_at",
    "next_attempt_at",
    "expires_at",
    "attempts",
    "updated_at",
    "content_version",
)


@dataclass(frozen=True)
class Cancelled:
    """What a cancellation stopped, and what it could not: sends already with a provider."""

    count: int
    in_flight: list[int]  # ids whose call had started before the cancellation committed


#: Rows a cancellation can still stop: not yet handed to a provider (their go-ahead has not
#: committed). The send path re-checks these under the same lock before any call.
_STOPPABLE = or_(
    ScheduledMessage.status.in_([s.value for s in CANCELLABLE]),
    and_(
        ScheduledMessage.status == MessageStatus.SENDING.value,
        ScheduledMessage.call_started_at.is_(None),
    ),
)

_WITH_PROVIDER = and_(
    ScheduledMessage.status.in_([MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value]),
    ScheduledMessage.call_started_at.is_not(None),
)


def cancel_live(
    session: Session, enrollment_ids: Iterable[int], reason: str, now: datetime
) -> Cancelled:
    """Cancel every row not yet handed to a provider (in the caller's transaction, which holds
    the patient's lock)."""
    return _cancel(session, list(enrollment_ids), None, reason, now)


def cancel_plan(
    session: Session, enrollment_ids: Iterable[int], reason: str, now: datetime
) -> Cancelled:
    """`cancel_live` for a re-plan: the plan's own rows, not a broadcast's (a broadcast is
    no step of the plan, so a new due date or a birth neither cancels nor repeats it)."""
    return _cancel(session, list(enrollment_ids), None, reason, now, plan_only=True)


def cancel_broadcast(session: Session, step_key: str, reason: str, now: datetime) -> Cancelled:
    """Cancel a broadcast's rows not yet handed to a provider, whoever they go to. No
    patient's lock: the send path's statements are fenced row by row, so a row cancelled
    here before its go-ahead never goes, and one whose go-ahead came first is in flight."""
    scope = [IS_BROADCAST, ScheduledMessage.step_key == step_key]
    return _cancel_where(session, scope, reason, now)


def cancel_channel(
    session: Session, patient_id: int, channel: Channel, reason: str, now: datetime
) -> Cancelled:
    """Cancel a patient's not-yet-sent messages on one channel, across their enrollments."""
    # The enrollment ids first: with them the UPDATE uses the enrollment_id index, where an
    # IN (subquery) was planned as a scan of the whole outbox (8 ms at 30,000 rows).
    enrollment_ids = list(
        session.execute(select(Enrollment.id).where(Enrollment.patient_id == patient_id)).scalars()
    )
    return _cancel(session, enrollment_ids, channel, reason, now)


def _cancel(
    session: Session,
    enrollment_ids: list[int],
    channel: Channel | None,
    reason: str,
    now: datetime,
    *,
    plan_only: bool = False,
) -> Cancelled:
    if not enrollment_ids:
        return Cancelled(0, [])
    scope: list[ColumnElement[bool]] = [ScheduledMessage.enrollment_id.in_(enrollment_ids)]
    if channel is not None:
        scope.append(ScheduledMessage.channel == channel.value)
    if plan_only:
        scope.append(not_(IS_BROADCAST))
    return _cancel_where(session, scope, reason, now)


def _cancel_where(
    session: Session, scope: Sequence[ColumnElement[bool]], reason: str, now: datetime
) -> Cancelled:
    result = session.execute(
        update(ScheduledMessage)
        .where(*scope, _STOPPABLE)
        .values(
            status=MessageStatus.CANCELLED.value, reason=reason, claim_token=None, updated_at=now
        )
    )
    in_flight = session.execute(
        select(ScheduledMessage.id).where(*scope, _WITH_PROVIDER).order_by(ScheduledMessage.id)
    ).scalars()
    return Cancelled(int(cast(CursorResult[Any], result).rowcount), list(in_flight))


#: (enrollment id, schedule version, content version or None, planned sends)
Plan = tuple[int, int, int | None, Sequence[PlannedSend]]


def write_plans(session: Session, plans: Sequence[Plan], now: datetime) -> int:
    """Insert planned rows in bulk (COPY on PostgreSQL); returns how many.

    Patients enrolled together often share a plan (same due date, timezone and choices); the
    row text of each distinct plan is formatted once and reused with each enrollment's id.
    """
    table = ScheduledMessage
    if not is_postgres(session):
        rows = [
            (eid, *_values(p, version, now), content)
            for eid, version, content, planned in plans
            for p in planned
        ]
        write_rows(session, table, PLAN_COLUMNS, rows)
        return len(rows)
    formatted: dict[tuple[int, int, int | None], list[str]] = {}
    stamp = iso(now)
    lines: list[str] = []
    for eid, version, content, planned in plans:
        key = (id(planned), version, content)
        tails = formatted.get(key)
        if tails is None:
            tails = formatted[key] = [_tail(p, version, content, stamp) for p in planned]
        prefix = str(eid)
        lines.extend([prefix + tail for tail in tails])
    copy_lines(session, table, PLAN_COLUMNS, lines)
    return len(lines)


def _tail(p: PlannedSend, version: int, content: int | None, stamp: str) -> str:
    """Everything after the enrollment id, in COPY text format. Keys and reasons are plain
    identifiers (the catalog checks step keys), so nothing here needs escaping."""
    due = iso(p.due_at)
    expires = iso(p.expires_at) if p.expires_at is not None else NULL
    return (
        f"\t{p.step.key}\t{p.channel.value}\t{p.step.kind.value}\t{version}"
        f"\t{p.status.value}\t{p.reason or NULL}\t{due}\t{due}\t{expires}\t0\t{stamp}"
        f"\t{NULL if content is None else content}\n"
    )


def _values(p: PlannedSend, version: int, now: datetime) -> tuple[Any, ...]:
    return (
        p.step.key,
        p.channel.value,
        p.step.kind.value,
        version,
        p.status.value,
        p.reason,
        p.due_at,
        p.due_at,
        p.expires_at,
        0,
        now,
    )


def sent_histories(session: Session, patient_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Every outbox row of each patient, in one query:
    (step_key, channel, status, due_at, enrollment_id) by patient id."""
    found: dict[int, list[Any]] = {pid: [] for pid in patient_ids}
    rows = session.execute(
        select(
            Enrollment.patient_id,
            ScheduledMessage.step_key,
            ScheduledMessage.channel,
            ScheduledMessage.status,
            ScheduledMessage.due_at,
            ScheduledMessage.enrollment_id,
        )
        .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
        .where(
            among(Enrollment.patient_id, patient_ids, postgres=is_postgres(session)),
            # A staff reply is no step of the plan, and does not take the day's one message.
            ScheduledMessage.kind != StepKind.STAFF_REPLY.value,
        )
    )
    for patient_id, *row in rows:
        found[patient_id].append(tuple(row))
    return found
