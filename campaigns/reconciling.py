"""Settling sends whose outcome is unknown: ask the provider, then act on what it says.

An `unknown` row's call started (its go-ahead committed) but its answer never came: a read
timeout, a Twilio 5xx, a connection broken mid-request, a worker that died mid-call. Once it is
`reconcile_after` old (time for the provider's own records and its callbacks to catch up), the
reconciler asks the provider (Twilio's message list by number and date, matched on our text
and time; SendGrid's Email Activity by our id):

    found      -> sent (or delivered / undelivered, as the provider says), with its id
    not found  -> it never got there: back to pending (the attempt stays spent), sent again
    can't ask  -> wait for a delivery callback; after `review_after`, staff decide (one alert
                  per sweep, with the evidence; `campaigns requeue --unknown` resends)
    error      -> ask again later, with the same deadline

A callback that arrives first settles the row itself (campaigns.receipts) and the reconciler
then finds nothing to do. Only `not found` leads to a resend, and only the provider's own
records can say it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from campaigns import alerts, audit, metrics
from campaigns.delivery import NEEDS_REVIEW, DeliveryPolicy
from campaigns.rules.ports import (
    Attempt,
    EmailSender,
    Lookup,
    LookupVerdict,
    ProviderError,
    SmsSender,
)
from campaigns.rules.replies import AlertSpec, Severity
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.storage.db import Database, among
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage

log = logging.getLogger(__name__)
SM = ScheduledMessage
UNCONFIRMED = AlertSpec(Severity.REVIEW, "sends_unconfirmed")
_DELIVERED = {"delivered", "read"}
_NOT_DELIVERED = {"failed", "undelivered", "not_delivered", "canceled", "bounced", "dropped"}


@dataclass(frozen=True)
class Unsettled:
    """An unknown send, with what was asked of the provider."""

    id: int
    patient_id: int
    channel: Channel
    to: str | None
    body: str | None
    subject: str | None
    started_at: datetime
    attempts: int


@dataclass(frozen=True)
class Resolution:
    """What an unknown row becomes, and the evidence for it."""

    id: int
    status: MessageStatus
    reason: str
    evidence: str
    provider_id: str | None = None
    error_code: str | None = None
    sent_at: datetime | None = None
    next_attempt_at: datetime | None = None
    reconcile_at: datetime | None = None

    @property
    def for_staff(self) -> bool:
        return self.reason == NEEDS_REVIEW


def settle(
    row: Unsettled,
    lookup: Lookup | None,
    error: str,
    now: datetime,
    policy: DeliveryPolicy,
) -> Resolution:
    """The pure rule: a provider's answer (or its failure to answer) -> the row's next state."""
    deadline = row.started_at + timedelta(seconds=policy.review_after_seconds)
    if lookup is not None and lookup.verdict is LookupVerdict.FOUND:
        status = MessageStatus.SENT
        word = (lookup.provider_status or "").lower()
        if word in _DELIVERED:
            status = MessageStatus.DELIVERED
        elif word in _NOT_DELIVERED:
            status = MessageStatus.UNDELIVERED
        return Resolution(
            row.id,
            status,
            "reconciled_sent",
            lookup.evidence,
            provider_id=lookup.provider_id,
            error_code=lookup.error_code,
            sent_at=row.started_at,
        )
    if lookup is not None and lookup.verdict is LookupVerdict.NOT_FOUND:
        if row.attempts >= policy.max_attempts:
            return Resolution(row.id, MessageStatus.FAILED, "attempts_exhausted", lookup.evidence)
        return Resolution(
            row.id,
            MessageStatus.PENDING,
            "reconciled_not_sent",
            lookup.evidence,
            next_attempt_at=now,
        )
    evidence = lookup.evidence if lookup is not None else f"lookup failed: {error}"
    if now >= deadline:
        return Resolution(row.id, MessageStatus.UNKNOWN, NEEDS_REVIEW, evidence)
    if lookup is not None:  # UNSUPPORTED: only a callback can settle it before the deadline
        return Resolution(
            row.id, MessageStatus.UNKNOWN, "awaiting_callback", evidence, reconcile_at=deadline
        )
    retry_at = min(deadline, now + timedelta(seconds=max(30, policy.reconcile_after_seconds)))
    return Resolution(
        row.id, MessageStatus.UNKNOWN, "lookup_failed", evidence, reconcile_at=retry_at
    )


def reconcile(
    db: Database,
    sms: SmsSender,
    email: EmailSender,
    now: datetime,
    policy: DeliveryPolicy,
    *,
    limit: int = 200,
    threads: int = 4,
) -> Counter[str]:
    """One sweep: the unknown rows now due for a lookup, asked and settled. Returns counts by
    reason (reconciled_sent, reconciled_not_sent, needs_review, ...)."""
    rows = due(db, now, limit)
    if not rows:
        return Counter()

    def ask(row: Unsettled) -> tuple[Lookup | None, str]:
        if row.to is None:
            return None, "no_address"
        attempt = Attempt(row.id, row.to, row.body or "", row.subject, row.started_at)
        provider = sms.name if row.channel is Channel.SMS else email.name
        started = time.perf_counter()
        try:
            if row.channel is Channel.SMS:
                return sms.find_sms(attempt), ""
            return email.find_email(attempt), ""
        except ProviderError as exc:
            return None, exc.code
        except Exception:
            log.exception(
                "looking up message %d failed unexpectedly",
                row.id,
                extra={"event": "reconcile.lookup_failed"},
            )
            return None, "unexpected_error"
        finally:
            metrics.PROVIDER_SECONDS.labels(provider, "status").observe(
                time.perf_counter() - started
            )

    # A few lookups at once: each is an HTTP round trip to the provider.
    with ThreadPoolExecutor(max(1, min(threads, len(rows))), thread_name_prefix="lookup") as pool:
        answers = list(pool.map(ask, rows))
    resolutions = [
        settle(row, lookup, error, now, policy)
        for row, (lookup, error) in zip(rows, answers, strict=True)
    ]
    applied = apply(db, rows, resolutions, now)
    counts = Counter(r.reason for r in applied)
    log.info(
        "reconciled %d unknown sends: %s",
        len(rows),
        dict(counts),
        extra={"event": "reconcile.settled"},
    )
    return counts


def due(db: Database, now: datetime, limit: int) -> list[Unsettled]:
    with db.session() as session:
        found = session.execute(
            select(
                SM.id,
                Enrollment.patient_id,
                SM.channel,
                Patient.phone,
                Patient.email,
                SM.body,
                SM.subject,
                SM.call_started_at,
                SM.send_started_at,
                SM.updated_at,
                SM.attempts,
            )
            .join(Enrollment, Enrollment.id == SM.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(
                SM.status == MessageStatus.UNKNOWN.value,
                SM.reconcile_at.is_not(None),
                SM.reconcile_at <= now,
            )
            .order_by(SM.reconcile_at)
            .limit(limit)
        ).all()
    rows = []
    for r in found:
        channel = Channel(r.channel)
        rows.append(
            Unsettled(
                r.id,
                r.patient_id,
                channel,
                r.phone if channel is Channel.SMS else r.email,
                r.body,
                r.subject,
                r.call_started_at or r.send_started_at or r.updated_at,
                r.attempts,
            )
        )
    return rows


def _changes(resolution: Resolution, now: datetime) -> dict[str, object]:
    """The row's new values for this resolution."""
    values: dict[str, object] = {
        "status": resolution.status.value,
        "reason": resolution.reason,
        "reconcile_at": resolution.reconcile_at,
        "updated_at": now,
    }
    if resolution.status is not MessageStatus.UNKNOWN:
        values["claim_token"] = None
    if resolution.provider_id is not None:
        values["provider_id"] = resolution.provider_id
    if resolution.error_code is not None:
        values["error_code"] = resolution.error_code
    if resolution.sent_at is not None:
        values["sent_at"] = resolution.sent_at
    if resolution.status is MessageStatus.PENDING:
        values["next_attempt_at"] = resolution.next_attempt_at or now
        values["call_started_at"] = None
    return values


def apply(
    db: Database, rows: Sequence[Unsettled], resolutions: Sequence[Resolution], now: datetime
) -> list[Resolution]:
    """Write each resolution if the row is still unknown (a callback may have settled it
    meanwhile), with an audit event carrying the evidence; one staff alert for what is left
    to them. Returns the resolutions applied."""
    patients = {row.id: row.patient_id for row in rows}
    applied: list[Resolution] = []
    with db.session() as session:
        still = set(
            session.execute(
                select(SM.id)
                .where(
                    among(SM.id, [r.id for r in resolutions], postgres=db.is_postgres),
                    SM.status == MessageStatus.UNKNOWN.value,
                )
                .with_for_update(of=SM)
            ).scalars()
        )
        for resolution in resolutions:
            if resolution.id not in still:
                continue
            values = _changes(resolution, now)
            session.execute(update(SM).where(SM.id == resolution.id).values(values))
            audit.record(
                session,
                now,
                "reconciler",
                "send_reconciled",
                patient_id=patients.get(resolution.id),
                message_id=resolution.id,
                became=resolution.status.value,
                reason=resolution.reason,
                evidence=resolution.evidence[:300],
            )
            applied.append(resolution)
        for_staff = [r for r in applied if r.for_staff]
        if for_staff:
            alerts.raise_alert(
                session,
                UNCONFIRMED,
                now,
                patient_id=None,
                inbound_id=None,
                matched=[],
                messages=[r.id for r in for_staff],
                evidence={str(r.id): r.evidence[:200] for r in for_staff[:50]},
            )
    return applied
