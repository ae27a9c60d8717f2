from datetime import date, timedelta

import pytest

from campaigns.rules.pregnancy import (
    EddError,
    GestationalAge,
    TrimesterConvention,
    check_edd,
    date_at_gestation,
    gestational_age,
    is_overdue_unconfirmed,
    pregnancy_start,
    trimester,
    trimester_label,
)

TODAY = date(2026, 11, 30)


@pytest.mark.parametrize(
    ("days_to_edd", "expected"),
    [
        (280, "0+0"),
        (279, "0+1"),
        (274, "0+6"),
        (273, "1+0"),
        (1, "39+6"),
        (0, "40+0"),
        (-1, "40+1"),
        (-14, "42+0"),
        (300, "-3+1"),
    ],
)
def test_gestational_age_counts_completed_weeks_and_days(days_to_edd: int, expected: str) -> None:
    assert str(gestational_age(TODAY + timedelta(days=days_to_edd), TODAY)) == expected


def test_gestational_age_is_280_minus_days_to_edd() -> None:
    edd = date(2027, 5, 14)
    for offset in range(-20, 300, 7):
        today = edd - timedelta(days=offset)
        assert gestational_age(edd, today).days == 280 - offset


def test_date_at_gestation_inverts_gestational_age() -> None:
    edd = date(2027, 5, 14)
    assert pregnancy_start(edd) == date(2026, 8, 7)
    day = date_at_gestation(edd, 20, 3)
    assert gestational_age(edd, day) == GestationalAge(20 * 7 + 3)


@pytest.mark.parametrize(
    ("convention", "boundaries"),
    [
        (TrimesterConvention.NHS, [("12+6", 1), ("13+0", 2), ("27+6", 2), ("28+0", 3)]),
        (TrimesterConvention.HSE, [("13+6", 1), ("14+0", 2), ("26+6", 2), ("27+0", 3)]),
        (TrimesterConvention.ACOG, [("13+6", 1), ("14+0", 2), ("27+6", 2), ("28+0", 3)]),
    ],
)
def test_trimester_boundaries_per_convention(
    convention: TrimesterConvention, boundaries: list[tuple[str, int]]
) -> None:
    for label, expected in boundaries:
        weeks, days = (int(x) for x in label.split("+"))
        assert trimester(GestationalAge(weeks * 7 + days), convention) == expected, label


def test_trimester_before_term_start_and_after_term() -> None:
    assert trimester(GestationalAge(-5)) == 1
    assert trimester(GestationalAge(43 * 7)) == 3
    assert trimester_label(GestationalAge(15 * 7)) == "second trimester"


def test_edd_up_to_44_weeks_ahead_is_accepted_and_a_day_more_is_not() -> None:
    assert check_edd(TODAY + timedelta(weeks=44), TODAY).days == 280 - 308
    with pytest.raises(EddError, match="more than 44 weeks after today"):
        check_edd(TODAY + timedelta(weeks=44, days=1), TODAY)


def test_edd_up_to_42_weeks_past_start_is_accepted_and_a_day_more_is_not() -> None:
    assert str(check_edd(TODAY - timedelta(days=14), TODAY)) == "42+0"
    with pytest.raises(EddError, match="42 weeks 1 day, past 42 weeks"):
        check_edd(TODAY - timedelta(days=15), TODAY)


def test_gestation_in_words_for_pages() -> None:
    assert GestationalAge(14 * 7 + 5).words() == "14 weeks 5 days"
    assert GestationalAge(7 + 1).words() == "1 week 1 day"
    assert GestationalAge(92 * 7).words() == "92 weeks"


def test_a_recorded_end_allows_dates_past_42_weeks() -> None:
    assert str(check_edd(TODAY - timedelta(days=30), TODAY, pregnancy_ended=True)) == "44+2"


def test_overdue_without_a_recorded_end() -> None:
    assert not is_overdue_unconfirmed(TODAY - timedelta(days=14), TODAY)
    assert is_overdue_unconfirmed(TODAY - timedelta(days=15), TODAY)
