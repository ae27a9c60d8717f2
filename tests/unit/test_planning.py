from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.rules.catalog import Campaign
from campaigns.rules.planning import CATCH_UP, PlanInput, PlannedSend, SkipReason, plan
from campaigns.rules.pregnancy import date_at_gestation, edd_for
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.rules.window import SendWindow, zone

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = Campaign.model_validate(
    yaml.safe_load((ROOT / "templates/leg-cramps/campaign.yaml").read_text())
)
WINDOW = SendWindow.parse("Mon-Sat 09:00-20:00", "GB-ENG")
BOTH = frozenset(Channel)
LONDON = "Europe/London"


def facts(
    edd: date,
    enrolled_on: date,
    tz: str = LONDON,
    *,
    channels: frozenset[Channel] = BOTH,
    marketing_channels: frozenset[Channel] = frozenset(),
    birth_date: date | None = None,
    done: frozenset[tuple[str, Channel]] = frozenset(),
    recorded: frozenset[tuple[str, Channel]] = frozenset(),
    busy_days: frozenset[date] = frozenset(),
) -> PlanInput:
    return PlanInput(
        timezone=tz,
        edd=edd,
        enrolled_on=enrolled_on,
        channels=channels,
        marketing_channels=marketing_channels,
        birth_date=birth_date,
        done=done,
        recorded=recorded,
        busy_days=busy_days,
    )


def at(day: date, hour: int = 8, minute: int = 30, tz: str = LONDON) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone(tz)).astimezone(UTC)


def pending(planned: list[PlannedSend]) -> list[PlannedSend]:
    return [p for p in planned if p.status is MessageStatus.PENDING]


def by_step(planned: list[PlannedSend], channel: Channel = Channel.SMS) -> dict[str, PlannedSend]:
    return {p.step.key: p for p in planned if p.channel is channel}


def local(p: PlannedSend, tz: str = LONDON) -> datetime:
    return p.due_at.astimezone(zone(tz))


TODAY = date(2026, 3, 2)  # a Monday


def test_early_enrollment_plans_every_step_in_order_without_skips() -> None:
    edd = edd_for(TODAY, 10)
    planned = plan(facts(edd, TODAY), CAMPAIGN, WINDOW, at(TODAY))
    assert all(p.status is MessageStatus.PENDING for p in planned if p.step.kind != "marketing")
    steps = [p.step.key for p in pending(planned) if p.channel is Channel.SMS]
    assert steps[0] == "welcome"
    assert "early-pregnancy" not in steps  # email only in the first trimester
    assert [p.step.key for p in pending(planned) if p.channel is Channel.EMAIL][1] == (
        "early-pregnancy"
    )
    # Birth-anchored steps wait for a birth date.
    assert "after-birth-safety" not in steps and "programme-end" not in steps
    assert "physio-offer" not in steps  # no marketing consent
    assert {p.reason for p in planned if p.step.key == "physio-offer"} == {
        SkipReason.NO_MARKETING_CONSENT
    }


def test_welcome_goes_as_soon_as_the_window_opens() -> None:
    planned = by_step(plan(facts(edd_for(TODAY, 10), TODAY), CAMPAIGN, WINDOW, at(TODAY, 8, 30)))
    assert planned["welcome"].due_at == at(TODAY, 9, 0)
    later = by_step(plan(facts(edd_for(TODAY, 10), TODAY), CAMPAIGN, WINDOW, at(TODAY, 14, 5)))
    assert later["welcome"].due_at == at(TODAY, 14, 5)


def test_enrolled_after_the_window_closes_gets_the_welcome_next_morning() -> None:
    planned = by_step(plan(facts(edd_for(TODAY, 10), TODAY), CAMPAIGN, WINDOW, at(TODAY, 20, 30)))
    assert planned["welcome"].due_at == at(TODAY + timedelta(days=1), 9, 0)


def test_steps_are_due_at_ten_local_on_their_gestational_day() -> None:
    edd = date(2026, 9, 18)  # 20+0 falls on Friday 2026-05-01
    planned = by_step(plan(facts(edd, TODAY), CAMPAIGN, WINDOW, at(TODAY)))
    clot = planned["clot-warning-signs"]
    assert date_at_gestation(edd, 20) == date(2026, 5, 1)
    assert local(clot) == datetime(2026, 5, 1, 10, tzinfo=zone(LONDON))
    assert clot.due_at == datetime(2026, 5, 1, 9, tzinfo=UTC)  # BST
    assert clot.expires_at == clot.due_at + timedelta(days=14)


def test_sunday_step_moves_to_monday_and_bank_holiday_to_next_open_day() -> None:
    edd = date(2026, 9, 20)  # 20+0 on Sunday 3 May; Monday 4 May is a bank holiday
    clot = by_step(plan(facts(edd, TODAY), CAMPAIGN, WINDOW, at(TODAY)))["clot-warning-signs"]
    assert local(clot).date() == date(2026, 5, 5)
    assert local(clot).hour == 10


def test_christmas_step_waits_until_after_the_boxing_day_substitute() -> None:
    # 28+0 on Friday 25 Dec 2026; 26th is Boxing Day, 27th Sunday, 28th the substitute holiday.
    edd = edd_for(date(2026, 12, 25), 28)
    assert date_at_gestation(edd, 28) == date(2026, 12, 25)
    step = by_step(plan(facts(edd, date(2026, 11, 30)), CAMPAIGN, WINDOW, at(date(2026, 11, 30))))[
        "later-pregnancy"
    ]
    assert local(step).date() == date(2026, 12, 29)


@pytest.mark.parametrize(
    ("tz", "winter_utc_hour", "summer_utc_hour"),
    [(LONDON, 10, 9), ("America/New_York", 15, 14)],
)
def test_due_times_follow_dst(tz: str, winter_utc_hour: int, summer_utc_hour: int) -> None:
    enrolled = date(2026, 1, 5)
    edd = edd_for(enrolled, 8)  # 12+0 on 2 Feb (winter), 20+0 on 30 Mar (summer in both)
    sms = by_step(plan(facts(edd, enrolled, tz=tz), CAMPAIGN, WINDOW, at(enrolled, 8, 0, tz)))
    email = by_step(
        plan(facts(edd, enrolled, tz=tz), CAMPAIGN, WINDOW, at(enrolled, 8, 0, tz)), Channel.EMAIL
    )
    assert email["early-pregnancy"].due_at.date() == date(2026, 2, 2)
    assert email["early-pregnancy"].due_at.hour == winter_utc_hour
    assert sms["clot-warning-signs"].due_at.date() == date(2026, 3, 30)
    assert sms["clot-warning-signs"].due_at.hour == summer_utc_hour
    for step in sms.values():
        if step.step.anchor.value == "edd":
            assert (local(step, tz).hour, local(step, tz).minute) == (10, 0), step.step.key


def test_a_custom_window_moves_the_send_time_inside_it() -> None:
    window = SendWindow.parse("Mon-Fri 11:00-17:00", "GB-ENG")
    planned = pending(plan(facts(edd_for(TODAY, 10), TODAY), CAMPAIGN, window, at(TODAY)))
    for p in planned:
        when = local(p)
        assert when.weekday() < 5 and 11 <= when.hour < 17, (p.step.key, when)


def test_at_most_one_step_per_patient_per_local_day() -> None:
    # Enrolled at 38+0: welcome and two catch-ups all want "today".
    planned = pending(plan(facts(edd_for(TODAY, 38), TODAY), CAMPAIGN, WINDOW, at(TODAY)))
    days: Counter[date] = Counter()
    for step in {p.step.key: p for p in planned}.values():
        days[local(step).date()] += 1
    assert max(days.values()) == 1
    # Both channels of a step share its slot.
    for key in {p.step.key for p in planned}:
        assert len({p.due_at for p in planned if p.step.key == key}) == 1


def test_days_already_taken_by_other_messages_are_avoided() -> None:
    edd = edd_for(TODAY, 10)
    base = by_step(plan(facts(edd, TODAY), CAMPAIGN, WINDOW, at(TODAY)))
    taken = local(base["supplements"]).date()
    moved = by_step(
        plan(facts(edd, TODAY, busy_days=frozenset({taken})), CAMPAIGN, WINDOW, at(TODAY))
    )
    assert local(moved["supplements"]).date() == taken + timedelta(days=1)


def test_late_enrollment_skips_the_past_and_catches_up_the_latest_warning_of_each_topic() -> None:
    planned = plan(facts(edd_for(TODAY, 33, 2), TODAY), CAMPAIGN, WINDOW, at(TODAY))
    sms = by_step(planned)
    for key in (
        "cramps-what-to-expect",
        "prevention-exercises",
        "easing-a-cramp",
        "clot-warning-signs",
        "supplements",
        "later-pregnancy",
        "daily-habits",
    ):
        assert sms[key].status is MessageStatus.SKIPPED, key
        assert sms[key].reason == SkipReason.BEFORE_ENROLMENT
    # The latest clot warning (32 weeks) and the pre-eclampsia warning go soon, once each.
    for key in ("clot-and-breathing-signs", "pre-eclampsia-signs"):
        assert sms[key].status is MessageStatus.PENDING and sms[key].reason == CATCH_UP
    order = [p.step.key for p in pending(planned) if p.channel is Channel.SMS]
    assert order[:3] == ["welcome", "clot-and-breathing-signs", "pre-eclampsia-signs"]
    assert local(sms["clot-and-breathing-signs"]).date() == TODAY + timedelta(days=1)
    # At most two texts a week: the second warning waits for the next week, not the next day.
    assert local(sms["pre-eclampsia-signs"]).date() == TODAY + timedelta(days=7)
    assert sms["sleep-and-cramps"].status is MessageStatus.PENDING
    assert sms["sleep-and-cramps"].reason is None


def test_a_late_joiner_gets_at_most_two_texts_in_her_first_week() -> None:
    """The welcome promises about one text a week: a Tuesday joiner at 38 weeks (welcome and
    two warnings to catch up) once got four texts by Friday."""
    tuesday = date(2026, 3, 3)
    planned = pending(plan(facts(edd_for(tuesday, 38), tuesday), CAMPAIGN, WINDOW, at(tuesday)))
    first_week = {
        p.step.key
        for p in planned
        if local(p).date() < tuesday + timedelta(days=7) and p.channel is Channel.SMS
    }
    assert len(first_week) == 2 and "welcome" in first_week
    catch_ups = [p for p in planned if p.reason == CATCH_UP and p.channel is Channel.SMS]
    assert len(catch_ups) == 2  # nothing dropped: the second warning comes the week after


def test_a_step_due_later_today_is_not_a_catch_up() -> None:
    edd = edd_for(TODAY, 20)  # 20+0 today
    sms = by_step(plan(facts(edd, TODAY), CAMPAIGN, WINDOW, at(TODAY, 15)))
    assert sms["clot-warning-signs"].reason is None
    assert sms["clot-warning-signs"].status is MessageStatus.PENDING


def test_steps_already_sent_are_never_planned_again() -> None:
    edd = edd_for(TODAY, 10)
    done = frozenset(
        {
            ("welcome", Channel.SMS),
            ("welcome", Channel.EMAIL),
            ("cramps-what-to-expect", Channel.SMS),
        }
    )
    planned = plan(facts(edd, TODAY, done=done), CAMPAIGN, WINDOW, at(TODAY))
    keys = {(p.step.key, p.channel) for p in planned}
    assert not keys & done
    assert ("cramps-what-to-expect", Channel.EMAIL) in keys


def test_skips_already_recorded_are_not_recorded_twice() -> None:
    recorded = frozenset({("cramps-what-to-expect", Channel.SMS)})
    planned = plan(facts(edd_for(TODAY, 20), TODAY, recorded=recorded), CAMPAIGN, WINDOW, at(TODAY))
    keys = {(p.step.key, p.channel) for p in planned if p.status is MessageStatus.SKIPPED}
    assert ("cramps-what-to-expect", Channel.SMS) not in keys
    assert ("cramps-what-to-expect", Channel.EMAIL) in keys


def test_after_a_birth_only_birth_steps_are_planned_from_the_birth_date() -> None:
    born = TODAY - timedelta(days=2)
    planned = plan(
        facts(
            edd_for(TODAY, 40),
            TODAY - timedelta(weeks=30),
            birth_date=born,
            done=frozenset({("welcome", c) for c in Channel}),
        ),
        CAMPAIGN,
        WINDOW,
        at(TODAY),
    )
    assert {p.step.anchor.value for p in planned} == {"birth"}
    sms = by_step(planned)
    assert local(sms["after-birth-safety"]).date() == born + timedelta(days=7)
    assert local(sms["programme-end"]).date() == born + timedelta(weeks=6)


def test_a_birth_recorded_late_catches_up_the_after_birth_warning() -> None:
    born = TODAY - timedelta(days=10)
    sms = by_step(
        plan(
            facts(edd_for(TODAY, 41), TODAY - timedelta(weeks=30), birth_date=born),
            CAMPAIGN,
            WINDOW,
            at(TODAY),
        )
    )
    assert sms["after-birth-safety"].reason == CATCH_UP
    assert local(sms["after-birth-safety"]).date() == TODAY


def test_no_after_birth_catch_up_once_the_six_weeks_are_over() -> None:
    born = TODAY - timedelta(weeks=7)
    sms = by_step(
        plan(
            facts(edd_for(TODAY, 46), TODAY - timedelta(weeks=30), birth_date=born),
            CAMPAIGN,
            WINDOW,
            at(TODAY),
        )
    )
    assert sms["after-birth-safety"].status is MessageStatus.SKIPPED
    assert sms["programme-end"].status is MessageStatus.SKIPPED


def test_marketing_goes_only_on_consented_channels() -> None:
    planned = plan(
        facts(edd_for(TODAY, 10), TODAY, marketing_channels=frozenset({Channel.SMS})),
        CAMPAIGN,
        WINDOW,
        at(TODAY),
    )
    offer = {p.channel: p for p in planned if p.step.key == "physio-offer"}
    assert offer[Channel.SMS].status is MessageStatus.PENDING
    assert offer[Channel.EMAIL].status is MessageStatus.SKIPPED


def test_only_the_patients_channels_are_planned() -> None:
    planned = plan(
        facts(edd_for(TODAY, 10), TODAY, channels=frozenset({Channel.SMS})),
        CAMPAIGN,
        WINDOW,
        at(TODAY),
    )
    assert {p.channel for p in planned} == {Channel.SMS}


TIMEZONES = ["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]


@settings(max_examples=150, deadline=None)
@given(
    weeks=st.integers(min_value=-4, max_value=41),
    days=st.integers(min_value=0, max_value=6),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)),
    tz=st.sampled_from(TIMEZONES),
    born_after=st.one_of(st.none(), st.integers(min_value=0, max_value=60)),
)
def test_every_plan_respects_the_rules(
    weeks: int, days: int, start: datetime, tz: str, born_after: int | None
) -> None:
    now = start.replace(tzinfo=UTC)
    today = now.astimezone(zone(tz)).date()
    edd = edd_for(today, weeks, days)
    birth = None if born_after is None else today - timedelta(days=born_after)
    planned = plan(
        facts(edd, today, tz=tz, birth_date=birth, marketing_channels=frozenset({Channel.SMS})),
        CAMPAIGN,
        WINDOW,
        now,
    )
    assert len({(p.step.key, p.channel) for p in planned}) == len(planned)
    live = pending(planned)
    per_day: dict[date, set[str]] = {}
    for p in live:
        assert p.due_at >= now
        assert WINDOW.is_open(p.due_at, zone(tz)), (p.step.key, p.due_at)
        assert p.expires_at is not None and p.expires_at > p.due_at
        per_day.setdefault(p.due_at.astimezone(zone(tz)).date(), set()).add(p.step.key)
    assert all(len(steps) == 1 for steps in per_day.values())
    sending_days = sorted(per_day)
    for first in sending_days:  # at most two messages in any seven days
        assert sum(1 for d in sending_days if first <= d < first + timedelta(days=7)) <= 2, (
            sending_days
        )
    if birth is not None:
        assert all(p.step.anchor.value != "edd" for p in planned)
    assert sum(1 for p in live if p.reason == CATCH_UP and p.channel is Channel.SMS) <= 3


def test_a_topic_already_warned_about_is_not_caught_up_again() -> None:
    # Enrolled at 33+2, the 32-week clot warning was caught up and sent; planning again a
    # week later (the horizon extends) must not dig out the 20-week one.
    enrolled = TODAY - timedelta(days=7)
    edd = edd_for(enrolled, 33, 2)
    done = frozenset(
        {
            ("welcome", Channel.SMS),
            ("clot-and-breathing-signs", Channel.SMS),
            ("pre-eclampsia-signs", Channel.SMS),
        }
    )
    recorded = frozenset({("clot-warning-signs", Channel.SMS)})
    planned = plan(
        facts(edd, enrolled, channels=frozenset({Channel.SMS}), done=done, recorded=recorded),
        CAMPAIGN,
        WINDOW,
        at(TODAY),
    )
    assert not [p for p in planned if p.reason == CATCH_UP]
    assert "clot-warning-signs" not in {p.step.key for p in pending(planned)}


def test_a_step_recorded_as_skipped_is_never_revived_as_a_catch_up() -> None:
    enrolled = TODAY - timedelta(days=7)
    recorded = frozenset({("clot-and-breathing-signs", Channel.SMS)})
    planned = plan(
        facts(
            edd_for(enrolled, 33, 2), enrolled, channels=frozenset({Channel.SMS}), recorded=recorded
        ),
        CAMPAIGN,
        WINDOW,
        at(TODAY),
    )
    assert "clot-and-breathing-signs" not in {p.step.key for p in pending(planned)}
    assert "clot-warning-signs" not in {p.step.key for p in pending(planned)}


def test_a_warning_missed_while_paused_is_still_caught_up() -> None:
    enrolled = TODAY - timedelta(weeks=5)
    done = frozenset({("welcome", Channel.SMS)})  # the 20-week step was cancelled, not skipped
    sms = by_step(
        plan(
            facts(edd_for(enrolled, 18), enrolled, channels=frozenset({Channel.SMS}), done=done),
            CAMPAIGN,
            WINDOW,
            at(TODAY),
        )
    )
    assert sms["clot-warning-signs"].reason == CATCH_UP
