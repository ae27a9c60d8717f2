"""The outbox state machine: claim due rows, hand them on, reap stale ones, requeue dead
letters. (Sending a claimed batch is campaigns.sending.)

    pending -> claimed -> sending -> sent           (delivered/undelivered/bounced come later)
    pending -> cancelled | skipped | expired
    sending -> unknown  (crashed after the provider may have accepted: never resent blindly)
    failed              (permanent error or attempts exhausted: the dead-letter list)

A send runs in two transactions. The first flips claimed -> sending with a compare-and-set on the
claim token, so a row is handed to a provider at most once. The second takes the patient's row
lock (FOR SHARE), re-checks everything that could have changed (enrollment, suppression,
consent, expiry, window), calls the provider and records the outcome before releasing the lock.
Cancellations take the same lock FOR UPDATE, so nothing is sent after a cancel commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, select, update

from campaigns import audit, halts
from campaigns.clock import Clock
from campaigns.domain import Channel, MessageStatus
from campaigns.storage.db import Database
from campaigns.storage.models import Enrollment, ScheduledMessage

log = logging.getLogger(__name__)
SM = ScheduledMessage


class SendQueue(Protocol):
    """Where claimed batches go: Celery queues in production, this process when embedded."""

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    dispatch_batch_size: int = 5000
    send_batch_size: int = 200
    send_concurrency: int = 200
    max_attempts: int = 5
    retry_base_seconds: int = 60
    retry_max_seconds: int = 3600
    claim_timeout_seconds: int = 600
    sending_timeout_seconds: int = 300


@dataclass(frozen=True)
class Claimed:
    token: str
    batches: list[tuple[Channel, list[int]]]

    @property
    def count(self) -> int:
        return sum(len(ids) for _, ids in self.batches)


def claim_due(
    db: Database,
    now: datetime,
    limit: int,
    send_batch_size: int,
    skip_channels: Collection[str] = (),
) -> Claimed:
    """Claim up to `limit` due rows in one statement and commit; publish only after this."""
    token = str(uuid.uuid4())
    due = (
        select(SM.id)
        .where(
            SM.status == MessageStatus.PENDING.value,
            SM.next_attempt_at <= now,
            *([SM.channel.not_in(list(skip_channels))] if skip_channels else []),
        )
        .order_by(SM.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    with db.session() as session:
        connection = session.connection()
        if db.is_postgres:
            # A claim lost in a crash is harmless (the row is pending again, and a send whose
            # claim vanished fails its compare-and-set), so this commit need not wait for disk.
            connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        rows = connection.execute(  # Core, not the ORM: thousands of rows come back
            update(SM)
            .where(SM.id.in_(due.scalar_subquery()))
            .values(
                status=MessageStatus.CLAIMED.value,
                claim_token=token,
                claimed_at=now,
                updated_at=now,
            )
            .returning(SM.id, SM.channel)
        ).all()
    by_channel: dict[str, list[int]] = {}
    for message_id, channel in rows:
        by_channel.setdefault(channel, []).append(message_id)
    for ids in by_channel.values():
        ids.sort()  # plain ints: sorting Row objects costs more than the claim itself
    batches = [
        (Channel(channel), ids[i : i + send_batch_size])
        for channel, ids in by_channel.items()
        for i in range(0, len(ids), send_batch_size)
    ]
    return Claimed(token, batches)


def dispatch_due(
    db: Database, queue: SendQueue, clock: Clock, policy: DeliveryPolicy, *, max_rounds: int = 10
) -> int:
    """One beat tick: claim what is due, in rounds, and hand each batch to the queue."""
    total = 0
    stopped = halts.halted(db)  # a halted channel's messages wait in the database
    for _ in range(max_rounds):
        claimed = claim_due(
            db,
            clock.now(),
            policy.dispatch_batch_size,
            policy.send_batch_size,
            skip_channels=stopped,
        )
        for channel, ids in claimed.batches:
            queue.publish(channel, ids, claimed.token)
        total += claimed.count
        if claimed.count < policy.dispatch_batch_size:
            break
    if total:
        log.info("dispatched %d due messages", total)
    return total


def reap(db: Database, now: datetime, policy: DeliveryPolicy) -> tuple[int, int]:
    """Return stale claims to pending; mark stale sends unknown. Returns (reclaimed, unknown)."""
    with db.session() as session:
        reclaimed = session.execute(
            update(SM)
            .where(
                SM.status == MessageStatus.CLAIMED.value,
                SM.claimed_at < now - timedelta(seconds=policy.claim_timeout_seconds),
            )
            .values(status=MessageStatus.PENDING.value, claim_token=None, updated_at=now)
        )
        unknown = session.execute(
            update(SM)
            .where(
                SM.status == MessageStatus.SENDING.value,
                SM.send_started_at < now - timedelta(seconds=policy.sending_timeout_seconds),
            )
            .values(status=MessageStatus.UNKNOWN.value, reason="stale_sending", updated_at=now)
        )
    counts = (_rowcount(reclaimed), _rowcount(unknown))
    if any(counts):
        log.warning("reaper: %d stale claims returned to pending, %d sends marked unknown", *counts)
    return counts


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


REQUEUABLE = (MessageStatus.FAILED.value, MessageStatus.UNKNOWN.value)


def requeue(db: Database, message_ids: Sequence[int], now: datetime, *, actor: str) -> list[int]:
    """Put failed or unknown messages back in the queue (an operator's decision, audited).

    An `unknown` message may have reached the patient: requeue it only once the provider's
    records show it did not. Every send still re-checks enrollment, consent and window.
    """
    with db.session() as session:
        found = session.execute(
            select(SM.id, SM.status, Enrollment.patient_id)
            .join(Enrollment, Enrollment.id == SM.enrollment_id)
            .where(SM.id.in_(list(message_ids)), SM.status.in_(REQUEUABLE))
        ).all()
        ids = [row.id for row in found]
        if ids:
            session.execute(
                update(SM)
                .where(SM.id.in_(ids), SM.status.in_(REQUEUABLE))
                .values(
                    status=MessageStatus.PENDING.value,
                    next_attempt_at=now,
                    attempts=0,
                    claim_token=None,
                    reason="requeued",
                    updated_at=now,
                )
            )
        for row in found:
            audit.record(
                session,
                now,
                actor,
                "requeued",
                patient_id=row.patient_id,
                message_id=row.id,
                previous_status=row.status,
            )
    return sorted(ids)


def dead_letters(db: Database, limit: int = 1000) -> list[int]:
    with db.session() as session:
        return list(
            session.execute(
                select(SM.id).where(SM.status.in_(REQUEUABLE)).order_by(SM.id).limit(limit)
            ).scalars()
        )
