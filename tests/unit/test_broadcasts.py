"""Broadcasts as pure rules: the form read into a draft (every problem by field, the text one
SMS with the clinic's name and, for an offer, the opt-out), the cohort's stages as date
ranges, one message per patient and channel, and when each patient's message is due."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from campaigns.rules import broadcasts as rules
from campaigns.rules.broadcasts import Cohort, LeftOut, Member, Purpose, Stage
from campaigns.rules.consent import ConsentState
from campaigns.rules.errors import InputErrors
from campaigns.rules.pregnancy import gestational_age
from campaigns.rules.vocabulary import Channel
from campaigns.rules.window import SendWindow, zone

LONDON = zone("Europe/London")
WINDOW = SendWindow.parse("Mon-Sat 09:00-20:00", "GB-ENG")
FORM: dict[str, Any] = {
    "name": "Closed on Friday",
    "purpose": "service",
    "status": ["active"],
    "stage": "any",
    "channels": ["sms", "email"],
    "sms": "The clinic is closed on Friday.",
    "subject": "Closed on Friday",
    "body": "The clinic is closed   on Friday.\n\n\nCall us <b>on Monday</b>.\n",
}


def read(**changes: Any) -> rules.Draft:
    return rules.read_form({**FORM, **changes}, campaigns=["leg-cramps"], clinic_short_name="Santi")


def problems(**changes: Any) -> dict[str, str]:
    with pytest.raises(InputErrors) as refused:
        read(**changes)
    return {p.field: p.message for p in refused.value.problems}


def test_the_form_reads_into_the_words_patients_get() -> None:
    draft = read()
    assert draft.sms == "Santi: The clinic is closed on Friday."
    assert draft.paragraphs == ("The clinic is closed on Friday.", "Call us <b>on Monday</b>.")
    offer = read(purpose="marketing", sms="Evening physio classes start in May.")
    assert offer.sms == "Santi: Evening physio classes start in May. Reply STOP to end"
    assert offer.cohort.channels == frozenset(Channel)


def test_the_opt_out_counts_towards_the_one_text() -> None:
    fits = "x" * 153  # with "Santi: ": 160
    assert read(sms=fits).sms is not None
    said = problems(purpose="marketing", sms=fits)["sms"]
    assert "178 characters of 160" in said and "Reply STOP to end" in said


def test_english_keeps_to_the_plain_alphabet_other_languages_may_not() -> None:
    assert "plain text alphabet" in problems(sms="Zamknięte w piątek")["sms"]
    assert read(sms="Zamknięte w piątek", language="pl").sms == "Santi: Zamknięte w piątek"


def test_every_problem_is_named_at_once() -> None:
    found = problems(
        name="",
        purpose="",
        status=[],
        stage="pregnant",
        weeks_from="30",
        weeks_to="20",
        channels=[],
    )
    assert list(found) == ["name", "purpose", "status", "weeks_to", "channels"]
    assert set(problems(channels=["sms", "email"], sms="", subject="", body=" ")) == {
        "sms",
        "subject",
        "body",
    }


@pytest.mark.parametrize("weeks", [(0, 0), (12, 20), (28, 42)])
def test_a_week_range_is_the_due_dates_of_those_completed_weeks(weeks: tuple[int, int]) -> None:
    day = date(2027, 3, 1)
    cohort = Cohort(frozenset({Channel.SMS}), stage=Stage.PREGNANT, low=weeks[0], high=weeks[1])
    earliest, latest = cohort.edd_range(day) or (day, day)
    inside = [earliest + timedelta(days=n) for n in range((latest - earliest).days + 1)]
    assert {gestational_age(edd, day).weeks for edd in inside} == set(range(weeks[0], weeks[1] + 1))
    for outside in (earliest - timedelta(days=1), latest + timedelta(days=1)):
        assert not weeks[0] <= gestational_age(outside, day).weeks <= weeks[1]


def _member(enrollment_id: int, channels: set[Channel], **changes: Any) -> Member:
    values: dict[str, Any] = {
        "enrollment_id": enrollment_id,
        "patient_id": 1,
        "schedule_version": 1,
        "channels": frozenset(channels),
        "timezone": "Europe/London",
        "discreet": False,
        "addresses": {Channel.SMS: True, Channel.EMAIL: True},
        "suppressed": frozenset(),
    }
    values.update(changes)
    return Member(**values)


EVERYTHING = ConsentState(frozenset(Channel), frozenset(Channel))
PROGRAMME_ONLY = ConsentState(frozenset(Channel), frozenset())


def test_a_patient_gets_one_message_per_channel_whatever_her_enrollments() -> None:
    both = [_member(7, {Channel.SMS}), _member(9, {Channel.SMS, Channel.EMAIL})]
    choice = rules.choose(both, EVERYTHING, frozenset(Channel), Purpose.SERVICE, discreet_out=False)
    assert choice.sends == ((Channel.EMAIL, 9, 1), (Channel.SMS, 7, 1))


@pytest.mark.parametrize(
    ("member", "consent", "purpose", "why"),
    [
        (_member(1, {Channel.SMS}, discreet=True), EVERYTHING, Purpose.SERVICE, LeftOut.DISCREET),
        (_member(1, {Channel.EMAIL}), EVERYTHING, Purpose.SERVICE, LeftOut.NOT_ON_CHANNEL),
        (_member(1, {Channel.SMS}), PROGRAMME_ONLY, Purpose.MARKETING, LeftOut.NO_CONSENT),
        (
            _member(1, {Channel.SMS}, suppressed=frozenset({Channel.SMS})),
            EVERYTHING,
            Purpose.SERVICE,
            LeftOut.STOPPED,
        ),
        (
            _member(1, {Channel.SMS}, addresses={Channel.SMS: False}),
            EVERYTHING,
            Purpose.SERVICE,
            LeftOut.NO_ADDRESS,
        ),
    ],
)
def test_why_a_patient_gets_nothing(
    member: Member, consent: ConsentState, purpose: Purpose, why: LeftOut
) -> None:
    channels = frozenset({Channel.SMS})
    assert rules.choose([member], consent, channels, purpose, discreet_out=True).left_out is why


def test_her_message_keeps_the_window_and_her_one_message_a_day() -> None:
    friday_evening = datetime(2026, 3, 6, 21, 0, tzinfo=UTC)  # the window is shut
    saturday_open = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)
    assert rules.due_at(friday_evening, LONDON, WINDOW, frozenset()) == saturday_open
    tuesday = datetime(2026, 3, 3, 14, 30, tzinfo=UTC)
    busy = frozenset({date(2026, 3, 3), date(2026, 3, 4)})
    # The same hour, on the first send day without a message for her.
    assert rules.due_at(tuesday, LONDON, WINDOW, busy) == tuesday + timedelta(days=2)
    saturday = frozenset({date(2026, 3, 7)})
    # Sunday is no send day: Saturday's message moves to Monday.
    assert rules.due_at(saturday_open, LONDON, WINDOW, saturday) == datetime(
        2026, 3, 9, 9, 0, tzinfo=UTC
    )


def test_a_broadcast_shows_whether_it_is_still_to_go_going_or_gone() -> None:
    scheduled = rules.Status.SCHEDULED
    assert rules.shown_status(scheduled, rules.Counts.of({"pending": 3})) == "scheduled"
    assert rules.shown_status(scheduled, rules.Counts.of({"pending": 1, "sent": 2})) == "sending"
    assert (
        rules.shown_status(scheduled, rules.Counts.of({"delivered": 2, "cancelled": 1})) == "sent"
    )
    assert rules.Counts.of({"delivered": 2, "sent": 1, "failed": 1, "unknown": 1}) == rules.Counts(
        3, 1, 1
    )
