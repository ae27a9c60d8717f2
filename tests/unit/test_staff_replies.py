"""Staff replies as pure rules: one SMS with the clinic's name first; the send rules apply to
them in full, the send window only until a clinician sets it aside."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from campaigns.rules import send_rules as rules
from campaigns.rules.catalog import Step
from campaigns.rules.consent import ConsentState
from campaigns.rules.content import staff_sms
from campaigns.rules.errors import InputError
from campaigns.rules.roles import Permission, Role, may
from campaigns.rules.vocabulary import Channel, MessageStatus, StepKind
from tests.unit.test_send_rules import FACTS, MONDAY, WINDOW

REPLY = replace(FACTS, kind=StepKind.STAFF_REPLY, text="Santi: we will call you")
EVENING = MONDAY.replace(hour=21)  # 21:00 GMT: the window is shut


def test_a_reply_starts_with_the_clinic_name_on_one_line() -> None:
    sms = staff_sms("Santi", "  We will\ncall you   today. ")
    assert sms.body == "Santi: We will call you today."
    assert (sms.encoding.encoding, sms.encoding.segments) == ("GSM-7", 1)


@pytest.mark.parametrize(
    ("words", "said"),
    [
        ("", "write the reply first"),
        ("x" * 154, "161 characters of 160"),
        ("{" * 77, "161 characters of 160"),  # an extended character counts twice
        ("é😊" + "x" * 62, "“😊” is not in the plain text alphabet"),
    ],
)
def test_a_reply_that_is_empty_or_needs_two_texts_is_refused_in_staff_words(
    words: str, said: str
) -> None:
    with pytest.raises(InputError) as refused:
        staff_sms("Santi", words)
    assert refused.value.field == "Reply"
    assert said in refused.value.message


def test_a_reply_that_just_fits_is_taken() -> None:
    assert staff_sms("Santi", "x" * 153).encoding.units == 160
    assert staff_sms("Santi", "😊" * 31).encoding.units == 69


def test_the_window_holds_a_reply_unless_a_clinician_sets_it_aside() -> None:
    waiting = rules.check(REPLY, EVENING, WINDOW)
    assert waiting is not None and waiting.reason == "window_closed"
    assert rules.check(replace(REPLY, outside_window=True), EVENING, WINDOW) is None
    # Delivered within the hour, not by a window close that has already passed.
    by = rules.deliver_by(replace(REPLY, outside_window=True), EVENING, WINDOW)
    assert by == EVENING + timedelta(hours=1)


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (replace(REPLY, suppressed=True), "suppressed"),
        (replace(REPLY, enrollment_status="loss_hold"), "enrollment_loss_hold"),
        (
            replace(REPLY, consent=ConsentState(frozenset({Channel.EMAIL}), frozenset())),
            "no_consent",
        ),
    ],
)
def test_setting_the_window_aside_sets_nothing_else_aside(facts: rules.Facts, reason: str) -> None:
    verdict = rules.check(replace(facts, outside_window=True), EVENING, WINDOW)
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (MessageStatus.CANCELLED, reason)


def test_only_clinicians_and_admins_may_set_the_window_aside() -> None:
    allowed = {role for role in Role if may(role, Permission.SEND_OUTSIDE_WINDOW)}
    assert allowed == {Role.CLINICIAN, Role.ADMIN}


def test_a_campaign_step_cannot_be_a_staff_reply() -> None:
    with pytest.raises(ValueError, match="staff_reply"):
        Step.model_validate(
            {
                "key": "hello",
                "anchor": "edd",
                "offset": {"weeks": 12},
                "kind": "staff_reply",
                "channels": ["sms"],
                "valid_for": {"days": 3},
            }
        )
