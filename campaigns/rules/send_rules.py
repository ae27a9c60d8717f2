"""Whether a message may go now, and what a provider's answer means for it: pure rules.

The send path reads a message's facts under its patient's lock and asks `check` (twice: when
the batch is prepared, and again at the go-ahead just before the call); after the call it asks
`delivered` or `after_error`. Each returns a `Verdict`: the row's next state, as data, which
storage writes. Nothing here does I/O, so every rule is a unit test.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from campaigns.rules.broadcasts import Text
from campaigns.rules.consent import ConsentState
from campaigns.rules.ports import (
    ConfigurationError,
    InvalidAddressError,
    OptedOutError,
    PermanentError,
    ProviderError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus, StepKind
from campaigns.rules.window import SendWindow, zone

#: A halted channel's messages wait this long before they are offered to it again.
HALT_RETRY = timedelta(minutes=5)
#: How long a carrier may take to deliver a text sent outside the window on purpose.
OUTSIDE_WINDOW_DELIVERY = timedelta(hours=1)


class Outcome(StrEnum):
    """What became of one message of a batch (counted per batch, for logs and tests)."""

    SENT = "sent"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DEFERRED = "deferred"  # window closed or details changed: back to pending
    RETRY = "retry"  # transient error: back to pending with backoff
    FAILED = "failed"
    UNKNOWN = "unknown"  # the call may have been accepted: reconciled with the provider
    NOT_CLAIMED = "not_claimed"  # cancelled, reaped or already handled: nothing to do
    HALTED = "halted"  # the provider account is misconfigured: the channel stops
    RELEASED = "released"  # never reached a provider: back to pending, no attempt used


class Followup(StrEnum):
    """Work a provider's answer asks for beyond the row itself, in its own transaction."""

    OPT_OUT = "opt_out"  # the recipient opted out at the provider: suppress the channel
    INVALID_ADDRESS = "invalid_address"  # the address is dead: mark it, re-plan (SMS -> email)
    HALT = "halt"  # the account is misconfigured: stop the channel, alert operators


@dataclass(frozen=True)
class Facts:
    """One message and everything that decides whether it may go, read under the lock."""

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
    consent: ConsentState
    suppressed: bool
    #: A staff reply's words, written with the row (other messages are rendered at send time).
    text: str | None = None
    #: A clinician said this staff reply may go outside the send window (recorded who).
    outside_window: bool = False
    #: The campaign version the row was written with (None: the campaign's first).
    content_version: int | None = None
    #: A broadcast's words (its rows are rendered from them, not from a campaign's templates).
    broadcast: Text | None = None

    @property
    def address(self) -> str | None:
        return self.phone if self.channel is Channel.SMS else self.email

    def content_inputs(self) -> tuple[object, ...]:
        """What the rendered message was made from: if any of it changed, render again."""
        return (
            self.address,
            self.name,
            self.language,
            self.discreet,
            self.campaign,
            self.content_version,
        )


@dataclass(frozen=True)
class Verdict:
    """A message's next state. `attempts` is the row's new count (the batch's start spent one)."""

    outcome: Outcome
    status: MessageStatus
    attempts: int
    reason: str | None = None
    next_attempt_at: datetime | None = None  # for rows going back to pending
    error_code: str | None = None
    provider: str | None = None
    provider_id: str | None = None
    sent_at: datetime | None = None
    reconcile_at: datetime | None = None  # for unknown rows: when to ask the provider
    followup: Followup | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_seconds: int
    max_seconds: int
    reconcile_after: timedelta


def deliver_by(facts: Facts, now: datetime, window: SendWindow) -> datetime:
    """The latest a provider may deliver this message: its own expiry, and never after the
    send window closes in the patient's timezone (a text queued at a carrier at 19:59 must not
    arrive at 23:00). Providers turn it into their validity period."""
    tz = zone(facts.timezone)
    closes = window.closes_at(now.astimezone(tz).date(), tz)
    if facts.outside_window:
        # Sent outside the window on purpose: the window's close is no limit (it may be past).
        closes = now + OUTSIDE_WINDOW_DELIVERY
    if facts.expires_at is not None and facts.expires_at < closes:
        return facts.expires_at
    return closes


def check(facts: Facts, now: datetime, window: SendWindow) -> Verdict | None:
    """Everything that can stop a send; None: it may go."""
    spent = facts.attempts
    if facts.enrollment_status != EnrollmentStatus.ACTIVE.value:
        return _end(facts, MessageStatus.CANCELLED, f"enrollment_{facts.enrollment_status}")
    if facts.address is None:
        return _end(facts, MessageStatus.FAILED, "no_address")
    if facts.address_invalid:
        return _end(facts, MessageStatus.CANCELLED, "invalid_address")
    if facts.suppressed:
        return _end(facts, MessageStatus.CANCELLED, "suppressed")
    if not facts.consent.allows(facts.kind, facts.channel):
        return _end(facts, MessageStatus.CANCELLED, "no_consent")
    if facts.discreet and facts.broadcast is not None and facts.broadcast.mentions_pregnancy():
        # She asked for discreet messages after the broadcast was written for her.
        return _end(facts, MessageStatus.CANCELLED, "discreet")
    if (
        facts.kind is StepKind.MARKETING
        and facts.marketing_hold_until is not None
        and now < facts.marketing_hold_until
    ):
        # A danger sign in the last 30 days: nothing that sells.
        return _end(facts, MessageStatus.CANCELLED, "safety_hold")
    if facts.expires_at is not None and now >= facts.expires_at:
        return _end(facts, MessageStatus.EXPIRED, "expired_before_send")
    tz = zone(facts.timezone)
    if not facts.outside_window and not window.is_open(now, tz):
        # A closed window is not an attempt: the row waits for the next opening.
        return Verdict(
            Outcome.DEFERRED,
            MessageStatus.PENDING,
            max(0, spent - 1),
            reason="window_closed",
            next_attempt_at=window.next_open(now, tz),
        )
    return None


def render_failed(facts: Facts) -> Verdict:
    return _end(facts, MessageStatus.FAILED, "render_error")


def changed_since_rendered(facts: Facts, now: datetime) -> Verdict:
    """The address or what the text was made from changed after rendering: render again."""
    return release(facts, now, "details_changed", outcome=Outcome.DEFERRED)


def release(
    facts: Facts, now: datetime, reason: str, *, outcome: Outcome = Outcome.RELEASED
) -> Verdict:
    """Back to pending at once, giving back the attempt: no provider was called."""
    return Verdict(
        outcome, MessageStatus.PENDING, max(0, facts.attempts - 1), reason, next_attempt_at=now
    )


def delivered(facts: Facts, receipt: SendReceipt, now: datetime) -> Verdict:
    return Verdict(
        Outcome.SENT,
        MessageStatus.SENT,
        facts.attempts,
        provider=receipt.provider,
        provider_id=receipt.provider_id,
        sent_at=now,
    )


def unexpected(facts: Facts, provider: str, now: datetime, policy: RetryPolicy) -> Verdict:
    """The call raised something no provider should: it may have gone, so ask the provider."""
    return _unknown(facts, provider, "unexpected_error", None, now, policy)


def after_error(
    facts: Facts,
    provider: str,
    error: ProviderError,
    now: datetime,
    window: SendWindow,
    policy: RetryPolicy,
    jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),
) -> Verdict:
    """What a classified provider error means for this message."""
    code = error.code
    if isinstance(error, UnknownOutcomeError):
        return _unknown(facts, provider, "provider_outcome_unknown", code, now, policy)
    if isinstance(error, OptedOutError):
        return _failed(facts, provider, "opted_out", code, Followup.OPT_OUT)
    if isinstance(error, InvalidAddressError):
        return _failed(facts, provider, "invalid_address", code, Followup.INVALID_ADDRESS)
    if isinstance(error, PermanentError):
        return _failed(facts, provider, type(error).__name__, code)
    if isinstance(error, ConfigurationError):
        # Not the patient's fault: the message waits, unspent, until the channel resumes.
        return Verdict(
            Outcome.HALTED,
            MessageStatus.PENDING,
            max(0, facts.attempts - 1),
            reason="channel_halted",
            next_attempt_at=window.next_open(now + HALT_RETRY, zone(facts.timezone)),
            error_code=code,
            provider=provider,
            followup=Followup.HALT,
        )
    if facts.attempts >= policy.max_attempts:
        return _failed(facts, provider, "attempts_exhausted", code)
    return retry(facts, provider, code, now, window, policy, error, jitter)


def retry(
    facts: Facts,
    provider: str | None,
    code: str | None,
    now: datetime,
    window: SendWindow,
    policy: RetryPolicy,
    error: ProviderError | None = None,
    jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),
) -> Verdict:
    """Back to pending after an exponential, jittered delay (at least the provider's ask)."""
    delay = (
        min(policy.base_seconds * 2 ** max(0, facts.attempts - 1), policy.max_seconds) * jitter()
    )
    if isinstance(error, RetryableError) and error.retry_after:
        delay = max(delay, error.retry_after)
    return Verdict(
        Outcome.RETRY,
        MessageStatus.PENDING,
        facts.attempts,
        reason="retry",
        next_attempt_at=window.next_open(now + timedelta(seconds=delay), zone(facts.timezone)),
        error_code=code,
        provider=provider,
    )


def _unknown(
    facts: Facts,
    provider: str,
    reason: str,
    code: str | None,
    now: datetime,
    policy: RetryPolicy,
) -> Verdict:
    return Verdict(
        Outcome.UNKNOWN,
        MessageStatus.UNKNOWN,
        facts.attempts,
        reason=reason,
        error_code=code,
        provider=provider,
        reconcile_at=now + policy.reconcile_after,
    )


def _failed(
    facts: Facts, provider: str, reason: str, code: str, followup: Followup | None = None
) -> Verdict:
    return Verdict(
        Outcome.FAILED,
        MessageStatus.FAILED,
        facts.attempts,
        reason=reason,
        error_code=code,
        provider=provider,
        followup=followup,
    )


def _end(facts: Facts, status: MessageStatus, reason: str) -> Verdict:
    return Verdict(Outcome(status.value), status, facts.attempts, reason=reason)
