"""Sending a claimed batch: the last checks, the provider calls, the record.

    T1  compare-and-set claimed -> sending for the whole batch (by claim token), committed:
        a row is handed to a provider at most once, whatever is redelivered.
    T2  lock the batch's patients FOR SHARE (in id order), then read everything that decides
        a send with fresh statements (enrollment, address, suppression, consent, expiry,
        window), render, call the providers concurrently (each call takes its rate-limit slot
        just before it), record every outcome with one executemany, commit.

Every change that can stop a send (loss, pause, STOP, a new due date) takes FOR UPDATE on the
patient first, so it waits for a batch holding that patient or is seen by it: nothing is sent
after a cancellation commits. A crash inside T2 leaves the batch `sending`; the reaper marks it
`unknown` and provider callbacks (which carry our id) settle what actually went.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from campaigns import halts, reachability
from campaigns.clock import Clock
from campaigns.consent import ConsentState
from campaigns.contacts import address_hash
from campaigns.content import ContentRenderer, Recipient
from campaigns.delivery import DeliveryPolicy
from campaigns.domain import (
    Channel,
    ConsentSource,
    EnrollmentStatus,
    MessageStatus,
    StepKind,
)
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
from campaigns.scheduling import Planner, consent_states, lock_patient, suppressions
from campaigns.storage.db import Database, among
from campaigns.storage.models import (
    Enrollment,
    Patient,
    ScheduledMessage,
)
from campaigns.window import SendWindow, zone

log = logging.getLogger(__name__)
SM = ScheduledMessage
HALT_RETRY = timedelta(minutes=5)
Followup = Callable[[], None]


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


@dataclass
class Job:
    """One message of the batch, as read under the patient's lock, and what became of it."""

    id: int
    attempts: int
    next_attempt_at: datetime
    step_key: str
    channel: Channel
    kind: StepKind
    expires_at: datetime | None
    enrollment_status: str
    campaign: str
    patient_id: int
    name: str
    phone: str | None
    email: str | None
    timezone: str
    language: str
    discreet: bool
    address_invalid: bool
    marketing_hold_until: datetime | None
    outcome: Outcome = Outcome.UNKNOWN
    changes: dict[str, Any] = field(default_factory=dict)
    outgoing: OutgoingSms | OutgoingEmail | None = None
    followup: Followup | None = None

    @property
    def address(self) -> str | None:
        return self.phone if self.channel is Channel.SMS else self.email


_RECORDED = (
    "status",
    "reason",
    "claim_token",
    "attempts",
    "next_attempt_at",
    "provider",
    "provider_id",
    "error_code",
    "sent_at",
    "body",
    "subject",
    "template_ref",
)


class Deliverer:
    def __init__(
        self,
        db: Database,
        renderer: ContentRenderer,
        window: SendWindow,
        links: LinkSigner,
        sms: SmsSender,
        email: EmailSender,
        clock: Clock,
        policy: DeliveryPolicy,
        planner: Planner,
        limiters: Mapping[Channel, RateLimiter],
    ) -> None:
        self.db, self.renderer, self.window, self.links = db, renderer, window, links
        self.sms, self.email, self.clock, self.policy = sms, email, clock, policy
        self.planner = planner
        self.limiters = dict(limiters)  # Unlimited where no rate is set
        self._pool = ThreadPoolExecutor(policy.send_concurrency, thread_name_prefix="send")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def send_one(self, message_id: int, claim_token: str) -> Outcome:
        [(outcome, _)] = self.send_batch([message_id], claim_token).most_common(1)
        return outcome

    def send_batch(self, message_ids: Sequence[int], claim_token: str) -> Counter[Outcome]:
        ids = list(dict.fromkeys(int(i) for i in message_ids))
        try:
            return self._send_batch(ids, claim_token)
        except Exception:
            # Rows stay `sending`: the reaper marks them unknown; never resent blindly.
            log.exception("a batch of %d messages failed unexpectedly", len(ids))
            return Counter({Outcome.UNKNOWN: len(ids)})

    def _send_batch(self, ids: list[int], claim_token: str) -> Counter[Outcome]:
        now = self.clock.now()
        with self.db.session() as session:
            started: dict[int, int] = dict(
                session.connection()
                .execute(  # Core: no ORM objects to synchronise
                    update(SM)
                    .where(
                        among(SM.id, ids, postgres=self.db.is_postgres),
                        SM.status == MessageStatus.CLAIMED.value,
                        SM.claim_token == claim_token,
                    )
                    .values(
                        status=MessageStatus.SENDING.value,
                        attempts=SM.attempts + 1,
                        send_started_at=now,
                        updated_at=now,
                    )
                    .returning(
                        SM.id,
                        select(Enrollment.patient_id)
                        .where(Enrollment.id == SM.enrollment_id)
                        .scalar_subquery(),
                    )
                )
                .all()
            )
        outcomes: Counter[Outcome] = Counter()
        if len(started) < len(ids):
            outcomes[Outcome.NOT_CLAIMED] = len(ids) - len(started)
        if not started:
            return outcomes
        with self.db.session() as session:
            jobs, consent, suppressed = self._load(
                session, list(started), sorted(set(started.values()))
            )
            now = self.clock.now()
            for job in jobs:
                self._decide(job, consent, suppressed, now)
            calls = [job for job in jobs if job.outgoing is not None]
            list(self._pool.map(self._call, calls))
            self._record(session, jobs, self.clock.now())
        outcomes.update(job.outcome for job in jobs)
        for job in jobs:
            if job.followup is not None:
                try:
                    job.followup()  # its own transaction, after the sends are recorded
                except Exception:
                    log.exception("follow-up for message %d failed", job.id)
        return outcomes

    def _load(
        self, session: Session, ids: list[int], patient_ids: list[int]
    ) -> tuple[list[Job], dict[int, ConsentState], set[tuple[str, str]]]:
        # Core on the session's connection: these reads need no ORM objects.
        connection = session.connection()
        postgres = connection.dialect.name == "postgresql"
        # The lock first (in id order), then fresh reads: READ COMMITTED gives each later
        # statement a snapshot that includes anything committed while we waited.
        connection.execute(
            select(Patient.id)
            .where(among(Patient.id, patient_ids, postgres=postgres))
            .order_by(Patient.id)
            .with_for_update(read=True)
        ).all()
        rows = connection.execute(
            select(
                SM.id,
                SM.attempts,
                SM.next_attempt_at,
                SM.step_key,
                SM.channel,
                SM.kind,
                SM.expires_at,
                Enrollment.status,
                Enrollment.campaign,
                Patient.id,
                Patient.name,
                Patient.phone,
                Patient.email,
                Patient.timezone,
                Patient.language,
                Patient.discreet,
                Patient.phone_invalid_at,
                Patient.email_invalid_at,
                Patient.marketing_hold_until,
            )
            .join(Enrollment, Enrollment.id == SM.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(among(SM.id, ids, postgres=postgres), SM.status == MessageStatus.SENDING.value)
        ).all()
        jobs = []
        for r in rows:
            channel = Channel(r[4])
            invalid = (r[16] if channel is Channel.SMS else r[17]) is not None
            jobs.append(
                Job(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    channel,
                    StepKind(r[5]),
                    r[6],
                    r[7],
                    r[8],
                    r[9],
                    r[10],
                    r[11],
                    r[12],
                    r[13],
                    r[14],
                    r[15],
                    invalid,
                    r[18],
                )
            )
        hashes = {address_hash(j.address) for j in jobs if j.address}
        return jobs, consent_states(connection, patient_ids), suppressions(connection, hashes)

    def _decide(
        self,
        job: Job,
        consent: Mapping[int, ConsentState],
        suppressed: set[tuple[str, str]],
        now: datetime,
    ) -> None:
        """Everything that can stop a send, checked under the lock; else render it."""
        if job.enrollment_status != EnrollmentStatus.ACTIVE.value:
            return self._finish(job, MessageStatus.CANCELLED, f"enrollment_{job.enrollment_status}")
        if job.address is None:
            return self._finish(job, MessageStatus.FAILED, "no_address")
        if job.address_invalid:
            return self._finish(job, MessageStatus.CANCELLED, "invalid_address")
        if (job.channel.value, address_hash(job.address)) in suppressed:
            return self._finish(job, MessageStatus.CANCELLED, "suppressed")
        if not consent[job.patient_id].allows(job.kind, job.channel):
            return self._finish(job, MessageStatus.CANCELLED, "no_consent")
        if (
            job.kind is StepKind.MARKETING
            and job.marketing_hold_until is not None
            and now < job.marketing_hold_until
        ):
            # A danger sign in the last 30 days: nothing that sells (CLINICAL.md section 4).
            return self._finish(job, MessageStatus.CANCELLED, "safety_hold")
        if job.expires_at is not None and now >= job.expires_at:
            return self._finish(job, MessageStatus.EXPIRED, "expired_before_send")
        tz = zone(job.timezone)
        if not self.window.is_open(now, tz):
            job.outcome = Outcome.DEFERRED
            job.changes = {
                "status": MessageStatus.PENDING.value,
                "claim_token": None,
                "attempts": job.attempts - 1,  # a closed window is not an attempt
                "next_attempt_at": self.window.next_open(now, tz),
            }
            return None
        try:
            job.outgoing = self._render(job)
        except Exception:
            log.exception("message %d could not be rendered", job.id)
            self._finish(job, MessageStatus.FAILED, "render_error")
        return None

    def _render(self, job: Job) -> OutgoingSms | OutgoingEmail:
        recipient = Recipient(job.name.split()[0], job.language, job.discreet)
        if job.channel is Channel.SMS:
            assert job.phone is not None
            sms = self.renderer.render_sms(job.campaign, job.step_key, recipient)
            job.changes = {"body": sms.body, "subject": None, "template_ref": sms.template_ref}
            return OutgoingSms(job.id, job.phone, sms.body, job.expires_at)
        assert job.email is not None
        unsubscribe = self.links.unsubscribe_url(job.patient_id, job.id)
        email = self.renderer.render_email(job.campaign, job.step_key, recipient, unsubscribe)
        job.changes = {
            "body": email.text,
            "subject": email.subject,
            "template_ref": email.template_ref,
        }
        return OutgoingEmail(
            job.id,
            job.email,
            email.subject,
            email.html,
            email.text,
            f"{job.campaign}:{job.step_key}",
            unsubscribe,
        )

    def _call(self, job: Job) -> None:
        """One provider call (in a pool thread): no database here, only the job's own fields."""
        assert job.outgoing is not None
        # At the last moment: providers count requests as they arrive.
        self.limiters[job.channel].acquire()
        provider = (self.sms if job.channel is Channel.SMS else self.email).name
        try:
            if isinstance(job.outgoing, OutgoingSms):
                receipt = self.sms.send_sms(job.outgoing)
            else:
                receipt = self.email.send_email(job.outgoing)
        except ProviderError as error:
            self._provider_error(job, provider, error)
            return
        except Exception:
            log.exception("message %d: unexpected error from %s", job.id, provider)
            self._finish(job, MessageStatus.UNKNOWN, "unexpected_error", provider=provider)
            return
        job.outcome = Outcome.SENT
        job.changes.update(
            status=MessageStatus.SENT.value,
            reason=None,
            claim_token=None,
            provider=receipt.provider,
            provider_id=receipt.provider_id,
            error_code=None,
            sent_at=self.clock.now(),
        )
        log.info("message %d sent by %s as %s", job.id, receipt.provider, receipt.provider_id)

    def _provider_error(self, job: Job, provider: str, error: ProviderError) -> None:
        channel, now, code = job.channel, self.clock.now(), error.code
        job.changes.update(error_code=code, provider=provider)
        if isinstance(error, UnknownOutcomeError):
            log.warning("message %d: outcome unknown (%s)", job.id, code)
            self._finish(job, MessageStatus.UNKNOWN, "provider_outcome_unknown")
        elif isinstance(error, OptedOutError):
            log.warning("message %d: recipient opted out at %s (%s)", job.id, provider, code)
            self._finish(job, MessageStatus.FAILED, "opted_out")
            job.followup = self._with_patient(
                job.patient_id,
                lambda s, p: reachability.opt_out(
                    s,
                    p,
                    channel,
                    now,
                    source=ConsentSource.PROVIDER,
                    reason=f"{provider}:{code}",
                    actor=f"provider:{provider}",
                ),
            )
        elif isinstance(error, InvalidAddressError):
            log.warning("message %d: address refused by %s (%s)", job.id, provider, code)
            self._finish(job, MessageStatus.FAILED, "invalid_address")
            job.followup = self._with_patient(
                job.patient_id,
                lambda s, p: reachability.mark_invalid(
                    s,
                    self.planner,
                    p,
                    channel,
                    now,
                    reason=f"{provider}:{code}",
                    actor=f"provider:{provider}",
                ),
            )
        elif isinstance(error, PermanentError):
            log.warning("message %d failed permanently (%s)", job.id, code)
            self._finish(job, MessageStatus.FAILED, type(error).__name__)
        elif isinstance(error, ConfigurationError):
            # Not the patient's fault: the message waits, unspent, until the channel resumes.
            self._retry_at(job, now + HALT_RETRY, spent=False)
            job.outcome = Outcome.HALTED
            job.followup = lambda: halts.halt(self.db, channel, provider, code, error.detail, now)
        elif job.attempts >= self.policy.max_attempts:
            log.error("message %d: attempts exhausted (%s)", job.id, code)
            self._finish(job, MessageStatus.FAILED, "attempts_exhausted")
        else:
            delay = min(
                self.policy.retry_base_seconds * 2 ** (job.attempts - 1),
                self.policy.retry_max_seconds,
            ) * random.uniform(0.8, 1.2)
            if isinstance(error, RetryableError) and error.retry_after:
                delay = max(delay, error.retry_after)
            self._retry_at(job, now + timedelta(seconds=delay), spent=True)
            job.outcome = Outcome.RETRY

    def _retry_at(self, job: Job, when: datetime, *, spent: bool) -> None:
        job.changes.update(
            status=MessageStatus.PENDING.value,
            claim_token=None,
            next_attempt_at=self.window.next_open(when, zone(job.timezone)),
            attempts=job.attempts if spent else job.attempts - 1,
        )

    @staticmethod
    def _finish(job: Job, status: MessageStatus, reason: str, **more: Any) -> None:
        job.outcome = Outcome(status.value)
        job.changes.update(status=status.value, reason=reason, claim_token=None, **more)

    def _with_patient(
        self, patient_id: int, action: Callable[[Session, Patient], object]
    ) -> Followup:
        """Run `action` in a new transaction holding the patient's lock (FOR UPDATE)."""

        def run() -> None:
            with self.db.session() as session:
                action(session, lock_patient(session, patient_id))

        return run

    @staticmethod
    def _record(session: Session, jobs: list[Job], now: datetime) -> None:
        """Every outcome at once; each row gets all the columns an outcome may change."""
        keep = {
            "status": MessageStatus.SENDING.value,
            "reason": None,
            "claim_token": None,
            "provider": None,
            "provider_id": None,
            "error_code": None,
            "sent_at": None,
            "body": None,
            "subject": None,
            "template_ref": None,
        }
        rows = [
            {
                **keep,
                "attempts": job.attempts,
                "next_attempt_at": job.next_attempt_at,
                **job.changes,
            }
            for job in jobs
        ]
        if not rows:
            return
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            # One statement over one JSON parameter: far less work than a hundred bound
            # UPDATEs, and json.dumps is cheaper than adapting a dozen Python lists to arrays.
            connection.execute(
                text(_RECORD_SQL),
                {
                    "now": now,
                    "rows": json.dumps(
                        [{"id": job.id, **row} for job, row in zip(jobs, rows, strict=True)],
                        default=_iso,
                    ),
                },
            )
            return
        table = cast(Table, SM.__table__)
        connection.execute(
            update(table)
            .where(table.c.id == bindparam("message"))
            .values(updated_at=bindparam("stamp"), **{k: bindparam(f"new_{k}") for k in _RECORDED}),
            [
                {"message": job.id, "stamp": now, **{f"new_{k}": row[k] for k in _RECORDED}}
                for job, row in zip(jobs, rows, strict=True)
            ],
        )


_COLUMN_TYPES = {"attempts": "int", "next_attempt_at": "timestamptz", "sent_at": "timestamptz"}
# Built from the fixed column names above, never from input.
_RECORD_SQL = (
    "UPDATE scheduled_messages AS sm SET updated_at = :now, "  # noqa: S608
    + ", ".join(f"{name} = v.{name}" for name in _RECORDED)
    + " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id bigint, "
    + ", ".join(f"{name} {_COLUMN_TYPES.get(name, 'text')}" for name in _RECORDED)
    + ") WHERE sm.id = v.id"
)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()  # aware UTC datetimes: the offset travels with them
    raise TypeError(f"cannot record a {type(value).__name__}")
