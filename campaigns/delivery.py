"""The outbox state machine: claim due rows, send each one, record what happened, reap.

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
import random
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from campaigns import audit, halts, reachability
from campaigns.catalog import Catalog
from campaigns.clock import Clock
from campaigns.content import ContentRenderer, Recipient
from campaigns.domain import Channel, ConsentSource, EnrollmentStatus, MessageStatus, StepKind
from campaigns.links import LinkSigner
from campaigns.providers.base import (
    ConfigurationError,
    EmailSender,
    InvalidAddressError,
    OptedOutError,
    OutgoingEmail,
    OutgoingSms,
    PermanentError,
    ProviderError,
    RetryableError,
    SmsSender,
    UnknownOutcomeError,
)
from campaigns.ratelimit import RateLimiter
from campaigns.scheduling import Planner, consent_state, lock_patient, suppressed_channels
from campaigns.storage.db import Database
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage
from campaigns.window import SendWindow, zone

log = logging.getLogger(__name__)
SM = ScheduledMessage
HALT_RETRY = timedelta(minutes=5)
Followup = Callable[[], None] | None


class SendQueue(Protocol):
    """Where claimed batches go: Celery queues in production, this process when embedded."""

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None: ...


class Outcome(StrEnum):
    SENT = "sent"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DEFERRED = "deferred"  # window closed: back to pending for the next opening
    RETRY = "retry"  # transient error: back to pending with backoff
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_CLAIMED = "not_claimed"  # cancelled, re-claimed or already handled: nothing to do
    HALTED = "halted"  # the provider account is misconfigured: the channel stops


@dataclass(frozen=True)
class DeliveryPolicy:
    dispatch_batch_size: int = 5000
    send_batch_size: int = 100
    send_concurrency: int = 16
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


class Deliverer:
    """Sends claimed batches: many provider calls in flight, each with its own transactions."""

    def __init__(
        self,
        db: Database,
        catalog: Catalog,
        renderer: ContentRenderer,
        window: SendWindow,
        links: LinkSigner,
        sms: SmsSender,
        email: EmailSender,
        clock: Clock,
        policy: DeliveryPolicy,
        planner: Planner,
        limiters: Mapping[Channel, RateLimiter] | None = None,
    ) -> None:
        self.planner = planner
        self.limiters = dict(limiters or {})
        self.db, self.catalog, self.renderer, self.window = db, catalog, renderer, window
        self.links, self.sms, self.email, self.clock, self.policy = links, sms, email, clock, policy
        self._pool = ThreadPoolExecutor(policy.send_concurrency, thread_name_prefix="send")

    def send_batch(self, message_ids: Sequence[int], claim_token: str) -> Counter[Outcome]:
        outcomes = self._pool.map(lambda mid: self.send_one(mid, claim_token), message_ids)
        return Counter(outcomes)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def send_one(self, message_id: int, claim_token: str) -> Outcome:
        try:
            return self._send_one(message_id, claim_token)
        except Exception:
            # Left in `sending`: the reaper marks it unknown; it is never resent blindly.
            log.exception("send of message %d failed unexpectedly", message_id)
            return Outcome.UNKNOWN

    def _send_one(self, message_id: int, claim_token: str) -> Outcome:
        now = self.clock.now()
        with self.db.session() as session:
            claimed = session.execute(
                update(SM)
                .where(
                    SM.id == message_id,
                    SM.status == MessageStatus.CLAIMED.value,
                    SM.claim_token == claim_token,
                )
                .values(
                    status=MessageStatus.SENDING.value,
                    attempts=SM.attempts + 1,
                    send_started_at=now,
                    updated_at=now,
                )
                .returning(SM.attempts)
            ).first()
        if claimed is None:
            return Outcome.NOT_CLAIMED
        attempts = claimed[0]
        with self.db.session() as session:
            outcome, followup = self._check_and_send(session, message_id, attempts)
        if followup is not None:
            followup()  # its own transaction, after the send is recorded
        return outcome

    def _check_and_send(
        self, session: Session, message_id: int, attempts: int
    ) -> tuple[Outcome, Followup]:
        enrollment_id = session.execute(
            select(SM.enrollment_id).where(SM.id == message_id)
        ).scalar_one()
        patient_id = session.execute(
            select(Enrollment.patient_id).where(Enrollment.id == enrollment_id)
        ).scalar_one()
        patient = session.execute(
            select(Patient).where(Patient.id == patient_id).with_for_update(read=True)
        ).scalar_one()
        # Everything below is read after the lock, so it reflects any cancel that committed.
        message = session.execute(
            select(SM).where(SM.id == message_id).execution_options(populate_existing=True)
        ).scalar_one()
        enrollment = session.execute(
            select(Enrollment)
            .where(Enrollment.id == enrollment_id)
            .execution_options(populate_existing=True)
        ).scalar_one()
        now = self.clock.now()
        channel, kind = Channel(message.channel), StepKind(message.kind)
        stop = self._recheck(session, message, enrollment, patient, channel, kind, now)
        if stop is not None:
            return stop, None
        try:
            outgoing = self._render(message, enrollment, patient, channel)
        except Exception:
            log.exception("message %d could not be rendered", message.id)
            return _finish(message, MessageStatus.FAILED, "render_error", now), None
        limit = self.limiters.get(channel)
        if limit is not None:
            # The provider counts requests as they arrive, so the slot is taken at the last
            # moment; the wait (at most threads/rate) only delays a concurrent cancellation.
            limit.acquire()
        try:
            if isinstance(outgoing, OutgoingSms):
                receipt = self.sms.send_sms(outgoing)
            else:
                receipt = self.email.send_email(outgoing)
        except ProviderError as error:
            return self._record_error(message, patient, error, attempts, now)
        message.status, message.provider, message.provider_id = (
            MessageStatus.SENT.value,
            receipt.provider,
            receipt.provider_id,
        )
        message.sent_at = message.updated_at = self.clock.now()
        message.error_code = message.reason = None
        log.info("message %d sent by %s as %s", message.id, receipt.provider, receipt.provider_id)
        return Outcome.SENT, None

    def _recheck(
        self,
        session: Session,
        message: ScheduledMessage,
        enrollment: Enrollment,
        patient: Patient,
        channel: Channel,
        kind: StepKind,
        now: datetime,
    ) -> Outcome | None:
        if enrollment.status != EnrollmentStatus.ACTIVE.value:
            return _finish(message, MessageStatus.CANCELLED, f"enrollment_{enrollment.status}", now)
        if (patient.phone if channel is Channel.SMS else patient.email) is None:
            return _finish(message, MessageStatus.FAILED, "no_address", now)
        if patient.phone_invalid_at if channel is Channel.SMS else patient.email_invalid_at:
            return _finish(message, MessageStatus.CANCELLED, "invalid_address", now)
        if channel in suppressed_channels(session, patient):
            return _finish(message, MessageStatus.CANCELLED, "suppressed", now)
        if not consent_state(session, patient.id).allows(kind, channel):
            return _finish(message, MessageStatus.CANCELLED, "no_consent", now)
        if message.expires_at is not None and now >= message.expires_at:
            return _finish(message, MessageStatus.EXPIRED, "expired_before_send", now)
        tz = zone(patient.timezone)
        if not self.window.is_open(now, tz):
            message.status, message.claim_token = MessageStatus.PENDING.value, None
            message.next_attempt_at = self.window.next_open(now, tz)
            message.attempts -= 1  # a closed window is not a failed attempt
            message.updated_at = now
            return Outcome.DEFERRED
        return None

    def _render(
        self, message: ScheduledMessage, enrollment: Enrollment, patient: Patient, channel: Channel
    ) -> OutgoingSms | OutgoingEmail:
        """Render the step for this patient and keep a copy on the row (the clinical record)."""
        recipient = Recipient(
            first_name=patient.name.split()[0], language=patient.language, discreet=patient.discreet
        )
        if channel is Channel.SMS:
            assert patient.phone is not None
            sms = self.renderer.render_sms(enrollment.campaign, message.step_key, recipient)
            message.body, message.subject, message.template_ref = sms.body, None, sms.template_ref
            return OutgoingSms(message.id, patient.phone, sms.body, message.expires_at)
        assert patient.email is not None
        unsubscribe = self.links.unsubscribe_url(patient.id, message.id)
        email = self.renderer.render_email(
            enrollment.campaign, message.step_key, recipient, unsubscribe
        )
        message.body, message.subject, message.template_ref = (
            email.text,
            email.subject,
            email.template_ref,
        )
        return OutgoingEmail(
            message.id,
            patient.email,
            email.subject,
            email.html,
            email.text,
            f"{enrollment.campaign}:{message.step_key}",
            unsubscribe,
        )

    def _record_error(
        self,
        message: ScheduledMessage,
        patient: Patient,
        error: ProviderError,
        attempts: int,
        now: datetime,
    ) -> tuple[Outcome, Followup]:
        channel = Channel(message.channel)
        provider = (self.sms if channel is Channel.SMS else self.email).name
        message.error_code, message.provider = error.code, provider
        if isinstance(error, UnknownOutcomeError):
            log.warning("message %d: outcome unknown (%s)", message.id, error.code)
            return _finish(message, MessageStatus.UNKNOWN, "provider_outcome_unknown", now), None
        if isinstance(error, OptedOutError):
            log.warning(
                "message %d: recipient opted out at %s (%s)", message.id, provider, error.code
            )
            return _finish(message, MessageStatus.FAILED, "opted_out", now), self._followup(
                patient.id,
                lambda s, p: reachability.opt_out(
                    s,
                    p,
                    channel,
                    now,
                    source=ConsentSource.PROVIDER,
                    reason=f"{provider}:{error.code}",
                    actor=f"provider:{provider}",
                ),
            )
        if isinstance(error, InvalidAddressError):
            log.warning("message %d: address invalid at %s (%s)", message.id, provider, error.code)
            return _finish(message, MessageStatus.FAILED, "invalid_address", now), self._followup(
                patient.id,
                lambda s, p: reachability.mark_invalid(
                    s,
                    self.planner,
                    p,
                    channel,
                    now,
                    reason=f"{provider}:{error.code}",
                    actor=f"provider:{provider}",
                ),
            )
        if isinstance(error, PermanentError):
            log.warning("message %d failed permanently (%s)", message.id, error.code)
            return _finish(message, MessageStatus.FAILED, type(error).__name__, now), None
        if isinstance(error, ConfigurationError):
            # Not the patient's fault: the message waits, unspent, until the channel resumes.
            message.attempts -= 1
            self._retry_at(message, patient, now + HALT_RETRY, now)
            return Outcome.HALTED, lambda: halts.halt(
                self.db, channel, provider, error.code, error.detail, now
            )
        if attempts >= self.policy.max_attempts:
            log.error("message %d: attempts exhausted (%s)", message.id, error.code)
            return _finish(message, MessageStatus.FAILED, "attempts_exhausted", now), None
        delay = min(
            self.policy.retry_base_seconds * 2 ** (attempts - 1), self.policy.retry_max_seconds
        ) * random.uniform(0.8, 1.2)
        if isinstance(error, RetryableError) and error.retry_after:
            delay = max(delay, error.retry_after)
        self._retry_at(message, patient, now + timedelta(seconds=delay), now)
        return Outcome.RETRY, None

    def _retry_at(
        self, message: ScheduledMessage, patient: Patient, when: datetime, now: datetime
    ) -> None:
        message.status, message.claim_token = MessageStatus.PENDING.value, None
        message.next_attempt_at = self.window.next_open(when, zone(patient.timezone))
        message.updated_at = now

    def _followup(
        self, patient_id: int, action: Callable[[Session, Patient], object]
    ) -> Callable[[], None]:
        """Run `action` in a new transaction that holds the patient's lock (FOR UPDATE)."""

        def run() -> None:
            with self.db.session() as session:
                action(session, lock_patient(session, patient_id))

        return run


def _finish(
    message: ScheduledMessage, status: MessageStatus, reason: str, now: datetime
) -> Outcome:
    message.status, message.reason, message.claim_token = status.value, reason, None
    message.updated_at = now
    return Outcome(status.value)


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
