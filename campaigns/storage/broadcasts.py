"""A broadcast's statements: the cohort's enrollments, the days its patients already have a
message, its outbox rows written in bulk (COPY on PostgreSQL), what became of them, and its
words for the send path and the pages (campaigns.broadcasts decides; this reads and writes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.orm import Session

from campaigns.rules.broadcasts import Cohort, Text, broadcast_id, paragraphs_of, step_key
from campaigns.rules.vocabulary import (
    NOT_SENT_FINAL,
    Channel,
    EnrollmentStatus,
    MessageStatus,
    StepKind,
)
from campaigns.storage.bulk import NULL, iso, write_rows
from campaigns.storage.db import among
from campaigns.storage.models import (
    IS_BROADCAST,
    Broadcast,
    Enrollment,
    Patient,
    ScheduledMessage,
)
from campaigns.storage.plans import PLAN_COLUMNS

SM = ScheduledMessage
#: Ids per statement on SQLite (its limit on bound parameters); PostgreSQL takes one array.
SQLITE_CHUNK = 5000


def chunks(connection: Connection, ids: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """The ids in one piece on PostgreSQL, in pieces SQLite can bind."""
    if connection.dialect.name == "postgresql":
        yield ids
        return
    for start in range(0, len(ids), SQLITE_CHUNK):
        yield ids[start : start + SQLITE_CHUNK]


@dataclass(frozen=True)
class CohortRow:
    enrollment_id: int
    patient_id: int
    schedule_version: int
    channels: str
    timezone: str
    discreet: bool
    phone: str | None
    email: str | None
    phone_ok: bool
    email_ok: bool


def cohort_rows(connection: Connection, cohort: Cohort, day: date) -> list[CohortRow]:
    """The enrollments in the cohort on `day` (the clinic's date of sending), each patient's
    together, an active one first. Erased patients are never in a cohort.

    Two reads of one table each (the enrollments, then their patients by id), joined here:
    no join plan to go wrong when a large import has left the tables' statistics behind (a
    nested loop over 50,000 patients took minutes before ANALYZE)."""
    query = select(
        Enrollment.id, Enrollment.patient_id, Enrollment.schedule_version, Enrollment.channels
    ).where(Enrollment.status.in_([s.value for s in cohort.statuses]))
    if cohort.campaign is not None:
        query = query.where(Enrollment.campaign == cohort.campaign)
    if (edd := cohort.edd_range(day)) is not None:
        query = query.where(Enrollment.birth_date.is_(None), Enrollment.edd.between(*edd))
    if (born := cohort.birth_range(day)) is not None:
        query = query.where(Enrollment.birth_date.between(*born))
    active_first = case((Enrollment.status == EnrollmentStatus.ACTIVE.value, 0), else_=1)
    enrollments = connection.execute(
        query.order_by(Enrollment.patient_id, active_first, Enrollment.id)
    ).all()
    patients = _patients(connection, sorted({e.patient_id for e in enrollments}), cohort.language)
    return [
        CohortRow(e.id, e.patient_id, e.schedule_version, e.channels, *patients[e.patient_id])
        for e in enrollments
        if e.patient_id in patients
    ]


def _patients(
    connection: Connection, ids: Sequence[int], language: str | None
) -> dict[int, tuple[str, bool, str | None, str | None, bool, bool]]:
    """Time zone, discreet, phone, email and whether each address works, by patient id (those
    not erased, and of the language when one is asked for)."""
    postgres = connection.dialect.name == "postgresql"
    found = {}
    for piece in chunks(connection, ids):
        query = select(
            Patient.id,
            Patient.timezone,
            Patient.discreet,
            Patient.phone,
            Patient.email,
            Patient.phone_invalid_at,
            Patient.email_invalid_at,
        ).where(among(Patient.id, piece, postgres=postgres), Patient.erased_at.is_(None))
        if language is not None:
            query = query.where(Patient.language == language)
        for r in connection.execute(query):
            found[r.id] = (
                r.timezone,
                bool(r.discreet),
                r.phone,
                r.email,
                bool(r.phone) and r.phone_invalid_at is None,
                bool(r.email) and r.email_invalid_at is None,
            )
    return found


def messages_due(
    connection: Connection, start: datetime, end: datetime, patient_ids: Collection[int]
) -> dict[int, list[datetime]]:
    """When each of these patients has a message due in [start, end): the sends that take
    her day's one message (not a staff reply, nor one that will never go). Read by due time
    (ix_scheduled_messages_due_at) and kept for these patients here."""
    found: dict[int, list[datetime]] = {}
    rows = connection.execute(
        select(Enrollment.patient_id, SM.due_at)
        .join(Enrollment, Enrollment.id == SM.enrollment_id)
        .where(
            SM.due_at >= start,
            SM.due_at < end,
            SM.status.not_in([s.value for s in NOT_SENT_FINAL]),
            SM.kind != StepKind.STAFF_REPLY.value,
        )
    ).all()  # fetched at once: row by row costs twice as much here
    for patient_id, due in rows:
        if patient_id in patient_ids:
            found.setdefault(patient_id, []).append(due)
    return found


#: One outbox row of a broadcast: enrollment, channel, schedule version, due, expires.
Send = tuple[int, Channel, int, datetime, datetime]


def write_sends(
    session: Session, key: str, kind: StepKind, sends: Iterable[Send], now: datetime
) -> int:
    """The broadcast's outbox rows, in bulk (COPY on PostgreSQL), pending; returns how many."""
    stamp = iso(now)
    written = 0

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal written
        for enrollment_id, channel, version, due, expires in sends:
            written += 1
            yield (
                enrollment_id,
                key,
                channel.value,
                kind.value,
                version,
                MessageStatus.PENDING.value,
                None,
                due,
                due,
                expires,
                0,
                now,
                None,  # content_version: a broadcast's words are its own, not a campaign's
            )

    def line(row: Sequence[Any]) -> str:
        due = iso(row[7])
        return (
            f"{row[0]}\t{key}\t{row[2]}\t{kind.value}\t{row[4]}\tpending\t{NULL}"
            f"\t{due}\t{due}\t{iso(row[9])}\t0\t{stamp}\t{NULL}\n"
        )

    write_rows(session, SM, PLAN_COLUMNS, rows(), line=line)
    return written


def status_counts(connection: Connection, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """How many of each broadcast's rows are in each status (ix_scheduled_messages_broadcast)."""
    found: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return found
    keys = [step_key(i) for i in ids]
    rows = connection.execute(
        select(SM.step_key, SM.status, func.count())
        .where(IS_BROADCAST, SM.step_key.in_(keys))
        .group_by(SM.step_key, SM.status)
    )
    for key, status, count in rows:
        number = broadcast_id(key)
        if number is not None:
            found[number][str(status)] = int(count)
    return found


def texts(connection: Connection, ids: Collection[int]) -> dict[int, Text]:
    """What these broadcasts say, for the send path and the pages."""
    if not ids:
        return {}
    rows = connection.execute(
        select(
            Broadcast.id,
            Broadcast.name,
            Broadcast.sms,
            Broadcast.email_subject,
            Broadcast.email_body,
        ).where(Broadcast.id.in_(sorted(ids)))
    )
    return {r.id: text_of(r) for r in rows}


def text_of(row: Any) -> Text:
    """A broadcast (or a row with its columns) as the words it sends."""
    return Text(
        id=row.id,
        name=row.name,
        sms=row.sms,
        subject=row.email_subject,
        paragraphs=paragraphs_of(row.email_body or ""),
    )


def texts_for_keys(connection: Connection, keys: Iterable[str]) -> dict[str, Text]:
    """The broadcasts among these step keys, by step key (campaign steps are left out)."""
    ids = {i for i in (broadcast_id(k) for k in keys) if i is not None}
    return {t.step_key: t for t in texts(connection, ids).values()}
