"""The outbox state machine: claim due rows, hand them on, reap stale ones, requeue dead
letters. (Sending a claimed batch is campaigns.sending; settling unknown sends is
campaigns.reconciling.)

    pending -> claimed -> sending -> sent           (delivered/undelivered/bounced come later)
    pending -> cancelled | skipped | expired
    sending -> pending   (the call never started: released, no attempt used)
    sending -> unknown   (the call started and its answer was lost: reconciled, never blind)
    unknown -> sent | pending | failed   (what the provider's records say)
    failed               (permanent error or attempts exhausted: the dead-letter list)

A claim is committed before its batch is published, so a lost publish is a delay, not a loss:
rows claimed but never taken by a worker return to pending after the claim timeout, and rows
of a batch whose worker stopped renewing its lease are taken back by the reaper.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement, CursorResult, and_, case, delete, func, select, update

from campaigns import audit, halts
from campaigns.rules.clock import Clock
from campaigns.rules.errors import StateError
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.storage import outbox
from campaigns.storage.db import Database, among
from campaigns.storage.models import Enrollment, ScheduledMessage, SendLease

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
    claim_timeout_seconds: int = 60
    send_lease_seconds: int = 30
    reconcile_after_seconds: int = 120
    review_after_seconds: int = 3600
    #: Messages per second each channel's provider account takes (0: no limit).
    rates: Mapping[Channel, float] = field(default_factory=dict)

    def claim_cap(self, channel: Channel) -> int | None:
        """How many rows of a rate-limited channel may wait claimed: what its workers can send
        in half a claim timeout, so a claim never expires merely for waiting its turn."""
        rate = self.rates.get(channel, 0.0)
        if rate <= 0:
            return None
        return max(self.send_batch_size, int(rate * self.claim_timeout_seconds / 2))


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
    only_channel: str | None = None,
) -> Claimed:
    """Claim up to `limit` due rows in one statement and commit; publish only after this."""
    token = str(uuid.uuid4())
    filters: list[ColumnElement[bool]] = []
    if skip_channels:
        filters.append(SM.channel.not_in(list(skip_channels)))
    if only_channel is not None:
        filters.append(SM.channel == only_channel)
    due = (
        select(SM.id)
        .where(
            SM.status == MessageStatus.PENDING.value,
            SM.next_attempt_at <= now,
            *filters,
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
    """One beat tick: claim what is due, in rounds, and hand each batch to the queue.

    A rate-limited channel is claimed only up to what its workers can send before a claim
    times out (`DeliveryPolicy.claim_cap`); the others as fast as they come due."""
    total = 0
    stopped = set(halts.halted(db))  # a halted channel's messages wait in the database
    capped = {
        channel: cap
        for channel in Channel
        if channel.value not in stopped and (cap := policy.claim_cap(channel)) is not None
    }
    if capped:
        waiting = claimed_counts(db)
        for channel, cap in capped.items():
            room = min(cap - waiting.get(channel.value, 0), policy.dispatch_batch_size)
            if room > 0:
                claimed = claim_due(
                    db, clock.now(), room, policy.send_batch_size, only_channel=channel.value
                )
                total += publish(db, queue, claimed, clock.now())
    skip = stopped | {channel.value for channel in capped}
    if len(skip) < len(Channel):
        for _ in range(max_rounds):
            claimed = claim_due(
                db,
                clock.now(),
                policy.dispatch_batch_size,
                policy.send_batch_size,
                skip_channels=skip,
            )
            total += publish(db, queue, claimed, clock.now())
            if claimed.count < policy.dispatch_batch_size:
                break
    if total:
        log.info(
            "dispatched %d due messages", total, extra={"event": "delivery.dispatched_due_messages"}
        )
    return total


def publish(db: Database, queue: SendQueue, claimed: Claimed, now: datetime) -> int:
    """Hand each claimed batch on; a batch the broker refused goes straight back to pending
    (not after the claim timeout). Returns how many messages were handed on."""
    handed = 0
    for channel, ids in claimed.batches:
        try:
            queue.publish(channel, ids, claimed.token)
        except Exception:
            log.exception(
                "a batch of %d %s messages could not be published",
                len(ids),
                channel,
                extra={"event": "delivery.batch_messages_could_not"},
            )
            try:
                release_claims(db, ids, claimed.token, now)
            except Exception:
                log.exception(
                    "and could not be released: the reaper returns it",
                    extra={"event": "delivery.could_not_be_released"},
                )
            continue
        handed += len(ids)
    return handed


def release_claims(db: Database, ids: Sequence[int], token: str, now: datetime) -> int:
    with db.session() as session:
        result = session.execute(
            update(SM)
            .where(
                among(SM.id, ids, postgres=db.is_postgres),
                SM.status == MessageStatus.CLAIMED.value,
                SM.claim_token == token,
            )
            .values(status=MessageStatus.PENDING.value, claim_token=None, updated_at=now)
        )
    return _rowcount(result)


def claimed_counts(db: Database) -> dict[str, int]:
    """Claimed rows waiting for a worker, by channel (the in-flight index serves it)."""
    with db.session() as session:
        return {
            channel: int(count)
            for channel, count in session.execute(
                select(SM.channel, func.count())
                .where(SM.status == MessageStatus.CLAIMED.value)
                .group_by(SM.channel)
            )
        }


@dataclass(frozen=True)
class Reaped:
    claims: int  # claimed, never taken by a worker: back to pending
    released: int  # a lost batch's rows whose call never started: back to pending
    unknown: int  # a lost batch's rows whose call started: to be reconciled

    def __bool__(self) -> bool:
        return bool(self.claims or self.released or self.unknown)


def reap(db: Database, now: datetime, policy: DeliveryPolicy) -> Reaped:
    """Take back what lost workers and lost tasks left: stale claims, and the rows of batches
    whose lease lapsed (never started: pending again; started: unknown, to be reconciled)."""
    lapsed = outbox.lease_lapsed(now - timedelta(seconds=policy.send_lease_seconds))
    # The calls started at least a lease ago; ask their providers once they are old enough.
    ask_at = now + timedelta(
        seconds=max(0, policy.reconcile_after_seconds - policy.send_lease_seconds)
    )
    with db.session() as session:
        claims = session.execute(
            update(SM)
            .where(
                SM.status == MessageStatus.CLAIMED.value,
                SM.claimed_at < now - timedelta(seconds=policy.claim_timeout_seconds),
            )
            .values(status=MessageStatus.PENDING.value, claim_token=None, updated_at=now)
        )
        released = session.execute(
            update(SM)
            .where(SM.status == MessageStatus.SENDING.value, SM.call_started_at.is_(None), lapsed)
            .values(
                status=MessageStatus.PENDING.value,
                claim_token=None,
                attempts=case((SM.attempts > 0, SM.attempts - 1), else_=0),
                next_attempt_at=now,
                reason="worker_lost",
                updated_at=now,
            )
        )
        # The token stays: if the worker was only cut off, its record still lands.
        unknown = session.execute(
            update(SM)
            .where(
                SM.status == MessageStatus.SENDING.value, SM.call_started_at.is_not(None), lapsed
            )
            .values(
                status=MessageStatus.UNKNOWN.value,
                reason="worker_lost",
                reconcile_at=ask_at,
                updated_at=now,
            )
        )
        session.execute(
            delete(SendLease).where(
                SendLease.renewed_at < now - timedelta(seconds=policy.send_lease_seconds)
            )
        )
    reaped = Reaped(_rowcount(claims), _rowcount(released), _rowcount(unknown))
    if reaped:
        log.warning(
            "reaper: %d stale claims and %d unstarted sends back to pending, %d sends to reconcile",
            reaped.claims,
            reaped.released,
            reaped.unknown,
            extra={"event": "delivery.reaper_stale_claims_unstarted"},
        )
    return reaped


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


#: Left for staff by the reconciler: the provider could not say whether it went.
NEEDS_REVIEW = "needs_review"


#: A requeued message starts again: pending, no attempts spent, no call started.
REQUEUED = {
    "status": MessageStatus.PENDING.value,
    "attempts": 0,
    "claim_token": None,
    "call_started_at": None,
    "reconcile_at": None,
    "reason": "requeued",
}


def requeue(
    db: Database,
    message_ids: Sequence[int],
    now: datetime,
    *,
    actor: str,
    unknown: bool = False,
    force: bool = False,
) -> list[int]:
    """Put failed messages back in the queue (an operator's decision, audited); all or none.

    `unknown` sends are refused unless `unknown` is set and reconciliation has left them for
    staff (the provider could not say whether they went), or `force` is set: such a message may
    already have reached the patient, so a requeue may text her twice. Every send still
    re-checks enrollment, consent and window. Raises StateError naming every id it refuses,
    and writes nothing then."""
    wanted = sorted({int(i) for i in message_ids})
    with db.session() as session:
        found = {
            row.id: row
            for row in session.execute(
                select(SM.id, SM.status, SM.reason, SM.reconcile_at, Enrollment.patient_id)
                .join(Enrollment, Enrollment.id == SM.enrollment_id)
                .where(among(SM.id, wanted, postgres=db.is_postgres))
                .with_for_update(of=SM)
            )
        }
        reasons = {i: _refusal(found.get(i), unknown=unknown, force=force) for i in wanted}
        refused = {i: why for i, why in reasons.items() if why}
        if refused:
            raise StateError(
                "not requeued (nothing was): "
                + "; ".join(f"message {i} {why}" for i, why in sorted(refused.items()))
            )
        if wanted:
            session.execute(
                update(SM)
                .where(among(SM.id, wanted, postgres=db.is_postgres))
                .values({**REQUEUED, "next_attempt_at": now, "updated_at": now})
            )
        for i in wanted:
            row = found[i]
            audit.record(
                session,
                now,
                actor,
                "requeued",
                patient_id=row.patient_id,
                message_id=row.id,
                previous_status=row.status,
                forced=force and row.status == MessageStatus.UNKNOWN.value,
            )
    return wanted


def _refusal(row: Any, *, unknown: bool, force: bool) -> str:
    if row is None:
        return "does not exist"
    if row.status == MessageStatus.FAILED.value:
        return ""
    if row.status != MessageStatus.UNKNOWN.value:
        return f"is {row.status}, not failed or unknown: only those can be requeued"
    if force:
        return ""
    if not unknown:
        return "is unknown (it may have been sent: see --unknown)"
    if row.reason != NEEDS_REVIEW:
        return "is unknown and still being reconciled with the provider (or use --force)"
    return ""


def requeue_all(
    db: Database,
    now: datetime,
    *,
    actor: str,
    unknown: bool = False,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Every failed message (or, with `unknown`, every unknown one reconciliation left for
    staff; with `force` too, every unknown one), page after page until none is left: no
    silent cap. Each page is all or none; raises StateError (after the pages done) if a row
    changed under it. `progress` hears the running total after each page."""
    done, after = 0, 0
    while True:
        if unknown:
            ids = unknown_ids(db, reviewed_only=not force, after=after)
        else:
            ids = failed_ids(db, after)
        if not ids:
            return done
        done += len(requeue(db, ids, now, actor=actor, unknown=unknown, force=force))
        after = ids[-1]
        if progress is not None:
            progress(done)


def failed_ids(db: Database, after: int = 0, limit: int = 1000) -> list[int]:
    """Failed (dead-letter) ids after `after`, in id order: page through with the last id."""
    return _ids(db, SM.status == MessageStatus.FAILED.value, after, limit)


def unknown_ids(
    db: Database, *, reviewed_only: bool, after: int = 0, limit: int = 1000
) -> list[int]:
    """Unknown ids: only those reconciliation left for staff, or every one."""
    condition = SM.status == MessageStatus.UNKNOWN.value
    if reviewed_only:
        condition = and_(condition, SM.reason == NEEDS_REVIEW)
    return _ids(db, condition, after, limit)


def unknown_left(db: Database) -> int:
    """Unknown sends still being reconciled (not yet left for staff)."""
    with db.session() as session:
        return int(
            session.execute(
                select(func.count()).where(
                    SM.status == MessageStatus.UNKNOWN.value, SM.reason != NEEDS_REVIEW
                )
            ).scalar_one()
        )


def _ids(db: Database, condition: Any, after: int, limit: int) -> list[int]:
    with db.session() as session:
        return list(
            session.execute(
                select(SM.id).where(condition, SM.id > after).order_by(SM.id).limit(limit)
            ).scalars()
        )
