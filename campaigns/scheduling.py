"""Turning plans into outbox rows and back: the bridge between planning (pure) and storage.

Every change that can stop or move a send takes the patient's row lock first (FOR UPDATE; on
SQLite the write lock), and the send path holds FOR SHARE on the same row from its last check
to its record. So a cancellation either waits for an in-flight send to finish or is seen by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, insert, select, update
from sqlalchemy.orm import Session

from campaigns.catalog import Catalog
from campaigns.consent import ConsentRecord, ConsentState, current
from campaigns.contacts import address_hash
from campaigns.domain import (
    CANCELLABLE,
    NOT_SENT_FINAL,
    Channel,
    ConsentPurpose,
    MessageStatus,
)
from campaigns.planning import PlanInput, PlannedSend, plan
from campaigns.storage.models import (
    ConsentEvent,
    Enrollment,
    Patient,
    ScheduledMessage,
    Suppression,
)
from campaigns.window import SendWindow, zone

COPY_COLUMNS = (
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
)


def lock_patient(session: Session, patient_id: int) -> Patient:
    """Take the patient's row lock for a change that can stop or move sends."""
    return session.execute(
        select(Patient).where(Patient.id == patient_id).with_for_update()
    ).scalar_one()


def consent_state(session: Session, patient_id: int) -> ConsentState:
    rows = session.execute(
        select(ConsentEvent.purpose, ConsentEvent.channel, ConsentEvent.granted)
        .where(ConsentEvent.patient_id == patient_id)
        .order_by(ConsentEvent.id)
    ).all()
    return current(
        ConsentRecord(ConsentPurpose(p), Channel(c) if c else None, g) for p, c, g in rows
    )


def suppressed_channels(session: Session, patient: Patient) -> frozenset[Channel]:
    addresses = {Channel.SMS: patient.phone, Channel.EMAIL: patient.email}
    hashes = {address_hash(a): c for c, a in addresses.items() if a}
    if not hashes:
        return frozenset()
    found = session.execute(
        select(Suppression.channel, Suppression.address_hash).where(
            Suppression.address_hash.in_(hashes)
        )
    ).all()
    return frozenset(Channel(c) for c, h in found if hashes.get(h) == Channel(c))


def cancel_live(session: Session, enrollment_ids: Iterable[int], reason: str, now: datetime) -> int:
    """Cancel every row not yet handed to a provider; returns how many."""
    result = session.execute(
        update(ScheduledMessage)
        .where(
            ScheduledMessage.enrollment_id.in_(list(enrollment_ids)),
            ScheduledMessage.status.in_([s.value for s in CANCELLABLE]),
        )
        .values(
            status=MessageStatus.CANCELLED.value, reason=reason, claim_token=None, updated_at=now
        )
    )
    return int(cast(CursorResult[Any], result).rowcount)


@dataclass(frozen=True)
class Planner:
    catalog: Catalog
    window: SendWindow

    def replan(
        self, session: Session, enrollment: Enrollment, patient: Patient, now: datetime
    ) -> list[PlannedSend]:
        """Plan the enrollment's current schedule version and write it (caller holds the lock)."""
        rows = session.execute(
            select(
                ScheduledMessage.step_key,
                ScheduledMessage.channel,
                ScheduledMessage.status,
                ScheduledMessage.due_at,
                ScheduledMessage.enrollment_id,
            )
            .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
            .where(Enrollment.patient_id == patient.id)
        ).all()
        tz = zone(patient.timezone)
        done: set[tuple[str, Channel]] = set()
        recorded: set[tuple[str, Channel]] = set()
        busy: set[date] = set()
        for step, channel, status, due_at, enrollment_id in rows:
            if status in NOT_SENT_FINAL:
                # A cancelled step that is now past gets a skip of its own in the new version.
                if enrollment_id == enrollment.id and status != MessageStatus.CANCELLED:
                    recorded.add((step, Channel(channel)))
                continue
            busy.add(due_at.astimezone(tz).date())
            if enrollment_id == enrollment.id:
                done.add((step, Channel(channel)))
        consent = consent_state(session, patient.id)
        channels = (
            frozenset(Channel(c) for c in enrollment.channels.split(",")) & consent.programme
        ) - suppressed_channels(session, patient)
        facts = PlanInput(
            timezone=patient.timezone,
            edd=enrollment.edd,
            enrolled_on=enrollment.enrolled_on,
            channels=channels,
            marketing_channels=consent.marketing,
            birth_date=enrollment.birth_date,
            done=frozenset(done),
            recorded=frozenset(recorded),
            busy_days=frozenset(busy),
        )
        planned = plan(facts, self.catalog[enrollment.campaign], self.window, now)
        write_plans(session, [(enrollment.id, enrollment.schedule_version, planned)], now)
        return planned


def plan_rows(
    enrollment_id: int, version: int, planned: Sequence[PlannedSend], now: datetime
) -> list[tuple[Any, ...]]:
    return [
        (
            enrollment_id,
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
        for p in planned
    ]


def write_plans(
    session: Session, plans: Sequence[tuple[int, int, Sequence[PlannedSend]]], now: datetime
) -> int:
    """Insert planned rows in bulk: COPY on PostgreSQL, executemany elsewhere."""
    rows = [row for eid, version, planned in plans for row in plan_rows(eid, version, planned, now)]
    if not rows:
        return 0
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY scheduled_messages ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        session.execute(
            insert(ScheduledMessage), [dict(zip(COPY_COLUMNS, r, strict=True)) for r in rows]
        )
    return len(rows)
