"""The send rules as pure functions: whether a message may go, what a provider's answer means."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.rules import send_rules as rules
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
from campaigns.rules.send_rules import Followup, Outcome
from campaigns.rules.vocabulary import Channel, MessageStatus, StepKind
from campaigns.rules.window import SendWindow

WINDOW = SendWindow.parse("Mon-Sat 09:00-20:00", "GB-ENG")
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # GMT: inside the window
POLICY = rules.RetryPolicy(
    max_attempts=5, base_seconds=60, max_seconds=3600, reconcile_after=timedelta(minutes=2)
)
FACTS = rules.Facts(
    id=1,
    attempts=1,  # the batch's start spent one
    next_attempt_at=MONDAY,
    step_key="welcome",
    channel=Channel.SMS,
    kind=StepKind.EDUCATION,
    expires_at=None,
    enrollment_status="active",
    campaign="leg-cramps",
    patient_id=7,
    name="Ada Example",
    phone="+447400000001",
    email="ada@example.com",
    timezone="Europe/London",
    language="en",
    discreet=False,
    address_invalid=False,
    marketing_hold_until=None,
    consent=ConsentState(frozenset(Channel), frozenset()),
    suppressed=False,
)


def test_a_message_whose_facts_allow_it_may_go() -> None:
    assert rules.check(FACTS, MONDAY, WINDOW) is None


@pytest.mark.parametrize(
    ("facts", "status", "reason"),
    [
        (
            replace(FACTS, enrollment_status="ended_loss"),
            MessageStatus.CANCELLED,
            "enrollment_ended_loss",
        ),
        (replace(FACTS, enrollment_status="paused"), MessageStatus.CANCELLED, "enrollment_paused"),
        (replace(FACTS, phone=None), MessageStatus.FAILED, "no_address"),
        (replace(FACTS, address_invalid=True), MessageStatus.CANCELLED, "invalid_address"),
        (replace(FACTS, suppressed=True), MessageStatus.CANCELLED, "suppressed"),
        (
            replace(FACTS, consent=ConsentState(frozenset({Channel.EMAIL}), frozenset())),
            MessageStatus.CANCELLED,
            "no_consent",
        ),
        (replace(FACTS, kind=StepKind.MARKETING), MessageStatus.CANCELLED, "no_consent"),
        (
            replace(
                FACTS,
                kind=StepKind.MARKETING,
                consent=ConsentState(frozenset(Channel), frozenset(Channel)),
                marketing_hold_until=MONDAY + timedelta(days=1),
            ),
            MessageStatus.CANCELLED,
            "safety_hold",
        ),
        (replace(FACTS, expires_at=MONDAY), MessageStatus.EXPIRED, "expired_before_send"),
    ],
)
def test_what_stops_a_send(facts: rules.Facts, status: MessageStatus, reason: str) -> None:
    verdict = rules.check(facts, MONDAY, WINDOW)
    assert verdict is not None
    assert (verdict.status, verdict.reason, verdict.attempts) == (status, reason, 1)
    assert verdict.outcome is Outcome(status.value)


def test_marketing_after_the_hold_with_consent_may_go() -> None:
    facts = replace(
        FACTS,
        kind=StepKind.MARKETING,
        consent=ConsentState(frozenset(Channel), frozenset(Channel)),
        marketing_hold_until=MONDAY,
    )
    assert rules.check(facts, MONDAY, WINDOW) is None


def test_a_closed_window_defers_to_its_next_opening_without_spending_an_attempt() -> None:
    sunday = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    verdict = rules.check(FACTS, sunday, WINDOW)
    assert verdict is not None
    assert (verdict.outcome, verdict.status, verdict.attempts) == (
        Outcome.DEFERRED,
        MessageStatus.PENDING,
        0,
    )
    assert verdict.next_attempt_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_what_a_message_was_rendered_from_decides_whether_it_must_be_rendered_again() -> None:
    assert FACTS.content_inputs() == replace(FACTS, attempts=3).content_inputs()
    for change in ({"phone": "+447400000002"}, {"name": "Bea"}, {"discreet": True}):
        assert FACTS.content_inputs() != replace(FACTS, **change).content_inputs()
    verdict = rules.changed_since_rendered(FACTS, MONDAY)
    assert (verdict.status, verdict.attempts, verdict.next_attempt_at) == (
        MessageStatus.PENDING,
        0,
        MONDAY,
    )


def test_a_receipt_is_a_sent_message_with_its_provider_id() -> None:
    verdict = rules.delivered(FACTS, SendReceipt("twilio", "SM1"), MONDAY)
    assert (verdict.status, verdict.provider, verdict.provider_id, verdict.sent_at) == (
        MessageStatus.SENT,
        "twilio",
        "SM1",
        MONDAY,
    )


@pytest.mark.parametrize(
    ("error", "status", "reason", "followup"),
    [
        (UnknownOutcomeError("timeout"), MessageStatus.UNKNOWN, "provider_outcome_unknown", None),
        (OptedOutError("21610"), MessageStatus.FAILED, "opted_out", Followup.OPT_OUT),
        (
            InvalidAddressError("21211"),
            MessageStatus.FAILED,
            "invalid_address",
            Followup.INVALID_ADDRESS,
        ),
        (PermanentError("21617"), MessageStatus.FAILED, "PermanentError", None),
        (ConfigurationError("20003"), MessageStatus.PENDING, "channel_halted", Followup.HALT),
        (RetryableError("20429"), MessageStatus.PENDING, "retry", None),
    ],
)
def test_provider_errors(
    error: ProviderError, status: MessageStatus, reason: str, followup: Followup | None
) -> None:
    verdict = rules.after_error(FACTS, "twilio", error, MONDAY, WINDOW, POLICY, lambda: 1.0)
    assert (verdict.status, verdict.reason, verdict.followup) == (status, reason, followup)
    assert verdict.error_code == error.code and verdict.provider == "twilio"


def test_an_unknown_outcome_is_asked_about_after_the_reconcile_delay() -> None:
    verdict = rules.after_error(
        FACTS, "twilio", UnknownOutcomeError("timeout"), MONDAY, WINDOW, POLICY
    )
    assert verdict.reconcile_at == MONDAY + timedelta(minutes=2)
    assert rules.unexpected(FACTS, "twilio", MONDAY, POLICY).status is MessageStatus.UNKNOWN


def test_a_halted_channel_gives_back_the_attempt_and_waits_five_minutes() -> None:
    verdict = rules.after_error(
        FACTS, "twilio", ConfigurationError("20003"), MONDAY, WINDOW, POLICY
    )
    assert verdict.attempts == 0
    assert verdict.next_attempt_at == MONDAY + rules.HALT_RETRY


def test_retries_back_off_exponentially_at_least_as_long_as_the_provider_asks() -> None:
    for attempts, seconds in ((1, 60), (2, 120), (3, 240)):
        verdict = rules.after_error(
            replace(FACTS, attempts=attempts),
            "twilio",
            RetryableError("20429"),
            MONDAY,
            WINDOW,
            POLICY,
            lambda: 1.0,
        )
        assert verdict.next_attempt_at == MONDAY + timedelta(seconds=seconds)
        assert verdict.attempts == attempts
    slow = rules.after_error(
        FACTS,
        "sendgrid",
        RetryableError("429", retry_after=600),
        MONDAY,
        WINDOW,
        POLICY,
        lambda: 1.0,
    )
    assert slow.next_attempt_at == MONDAY + timedelta(seconds=600)
    capped = rules.retry(
        replace(FACTS, attempts=4),
        None,
        None,
        MONDAY,
        WINDOW,
        replace(POLICY, max_seconds=100),
        jitter=lambda: 1.0,
    )
    assert capped.next_attempt_at == MONDAY + timedelta(seconds=100)


def test_a_retry_lands_inside_the_send_window() -> None:
    evening = datetime(2026, 3, 2, 19, 59, 30, tzinfo=UTC)
    verdict = rules.after_error(
        FACTS, "twilio", RetryableError("20429"), evening, WINDOW, POLICY, lambda: 1.0
    )
    assert verdict.next_attempt_at == datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def test_the_last_attempt_fails_for_good() -> None:
    verdict = rules.after_error(
        replace(FACTS, attempts=5), "twilio", RetryableError("20429"), MONDAY, WINDOW, POLICY
    )
    assert (verdict.status, verdict.reason) == (MessageStatus.FAILED, "attempts_exhausted")


def test_a_release_gives_the_attempt_back_and_never_goes_below_zero() -> None:
    assert rules.release(FACTS, MONDAY, "x").attempts == 0
    assert rules.release(replace(FACTS, attempts=0), MONDAY, "x").attempts == 0
    assert rules.release(FACTS, MONDAY, "x").outcome is Outcome.RELEASED


def test_a_text_must_be_delivered_before_the_send_window_closes() -> None:
    """A carrier may hold a text for hours: the provider is told not to deliver it after
    the window closes in the patient's timezone (or after the message expires, if sooner)."""
    now = datetime(2026, 3, 2, 19, 59, tzinfo=UTC)  # a Monday, 19:59 in London (GMT)
    closes = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    assert rules.deliver_by(FACTS, now, WINDOW) == closes
    later = replace(FACTS, expires_at=closes + timedelta(days=3))
    assert rules.deliver_by(later, now, WINDOW) == closes
    sooner = replace(FACTS, expires_at=now + timedelta(seconds=30))
    assert rules.deliver_by(sooner, now, WINDOW) == sooner.expires_at
    in_new_york = replace(FACTS, timezone="America/New_York")  # 14:59 there: closes 20:00 EST
    assert rules.deliver_by(in_new_york, now, WINDOW) == datetime(2026, 3, 3, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("words", "discreet", "goes"),
    [
        ("Santi: antenatal classes move to Tuesday. Reply STOP to end", True, False),
        ("Santi: newborn first-aid evening on Friday. Reply STOP to end", True, False),
        ("Santi: the clinic is closed on Friday. Reply STOP to end", True, True),
        ("Santi: antenatal classes move to Tuesday. Reply STOP to end", False, True),
    ],
)
def test_a_broadcast_never_tells_a_discreet_patients_phone_she_is_pregnant(
    words: str, discreet: bool, goes: bool
) -> None:
    """She may ask for discreet messages after the broadcast's rows were written."""
    said = Text(id=3, name="Notice", sms=words, subject=None)
    facts = replace(FACTS, step_key=said.step_key, broadcast=said, discreet=discreet)
    verdict = rules.check(facts, MONDAY, WINDOW)
    if goes:
        assert verdict is None
    else:
        assert verdict is not None and (verdict.status, verdict.reason) == ("cancelled", "discreet")
