from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from campaigns.rules.window import HolidayCalendar, SendWindow, WindowError, local_to_utc, zone

LONDON = zone("Europe/London")
NEW_YORK = zone("America/New_York")
DEFAULT = SendWindow.parse("Mon-Sat 09:00-20:00", "GB-ENG")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_parse_reads_days_and_hours() -> None:
    window = SendWindow.parse("Mon-Sat 09:00-20:00")
    assert window.weekdays == frozenset(range(6))
    assert (window.start_minute, window.end_minute) == (540, 1200)
    assert SendWindow.parse("Sat-Mon 08:30-24:00").weekdays == frozenset({5, 6, 0})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("weekdays 9-5", "is not like"),
        ("Mon-Sat 20:00-09:00", "must end after it starts"),
        ("Mon-Xyz 09:00-20:00", "'Xyz' is not a day"),
        ("Mon-Sat 09:75-20:00", "is not a time"),
    ],
)
def test_parse_explains_bad_windows(spec: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        SendWindow.parse(spec)


def test_unknown_holiday_region_and_timezone_are_refused() -> None:
    with pytest.raises(WindowError, match="unknown holiday region 'GB-XX'"):
        HolidayCalendar("GB-XX")
    with pytest.raises(WindowError, match="unknown timezone 'Mars/Olympus'"):
        zone("Mars/Olympus")


def test_open_hours_are_start_inclusive_end_exclusive() -> None:
    monday = date(2026, 3, 2)  # GMT: local == UTC
    assert not DEFAULT.is_open(utc(2026, 3, 2, 8, 59), LONDON)
    assert DEFAULT.is_open(utc(2026, 3, 2, 9, 0), LONDON)
    assert DEFAULT.is_open(utc(2026, 3, 2, 19, 59), LONDON)
    assert not DEFAULT.is_open(utc(2026, 3, 2, 20, 0), LONDON)
    assert DEFAULT.opens_at(monday, LONDON) == utc(2026, 3, 2, 9)


def test_sundays_and_english_bank_holidays_are_closed() -> None:
    assert not DEFAULT.is_open(utc(2026, 3, 1, 12), LONDON)  # Sunday
    assert not DEFAULT.is_open(utc(2026, 5, 4, 12), LONDON)  # Early May bank holiday (Monday)
    assert not DEFAULT.is_open(utc(2026, 12, 28, 12), LONDON)  # Boxing Day (substitute)
    assert DEFAULT.is_open(utc(2026, 12, 29, 12), LONDON)


def test_scottish_holidays_differ_from_english() -> None:
    scotland = SendWindow.parse("Mon-Sat 09:00-20:00", "GB-SCT")
    assert scotland.is_open(utc(2026, 4, 6, 12), LONDON)  # Easter Monday: England only
    assert not DEFAULT.is_open(utc(2026, 4, 6, 12), LONDON)
    assert not scotland.is_open(utc(2026, 1, 2, 12), LONDON)  # 2 January: Scotland only


def test_next_open_skips_evening_sunday_and_holidays() -> None:
    saturday_night = utc(2026, 3, 7, 20, 30)
    assert DEFAULT.next_open(saturday_night, LONDON) == utc(2026, 3, 9, 9)
    good_friday_eve = utc(2026, 4, 2, 21)  # Thu night; Fri Good Friday; Sat open
    assert DEFAULT.next_open(good_friday_eve, LONDON) == utc(2026, 4, 4, 8)  # 09:00 BST
    inside = utc(2026, 3, 3, 14, 15)
    assert DEFAULT.next_open(inside, LONDON) == inside


def test_window_is_in_the_patients_own_timezone() -> None:
    # 15:00 UTC on a Monday is 10:00 in New York (EST): open there.
    assert DEFAULT.is_open(utc(2026, 3, 2, 15), NEW_YORK)
    # 13:30 UTC is 08:30 in New York: closed, opens at 14:00 UTC.
    assert DEFAULT.next_open(utc(2026, 3, 2, 13, 30), NEW_YORK) == utc(2026, 3, 2, 14)


@pytest.mark.parametrize(
    ("tz", "day", "minute", "expected"),
    [
        # London spring forward 2026-03-29 01:00 GMT -> 02:00 BST: 01:30 does not exist.
        (LONDON, date(2026, 3, 29), 90, utc(2026, 3, 29, 1, 30)),  # = 02:30 BST, after the gap
        # London fall back 2026-10-25 02:00 BST -> 01:00 GMT: 01:30 happens twice, take the first.
        (LONDON, date(2026, 10, 25), 90, utc(2026, 10, 25, 0, 30)),
        # New York spring forward 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 -> 03:30 EDT.
        (NEW_YORK, date(2026, 3, 8), 150, utc(2026, 3, 8, 7, 30)),
        # New York fall back 2026-11-01 02:00 EDT -> 01:00 EST: first 01:30 is EDT.
        (NEW_YORK, date(2026, 11, 1), 90, utc(2026, 11, 1, 5, 30)),
        (LONDON, date(2026, 3, 28), 600, utc(2026, 3, 28, 10)),  # 10:00 GMT
        (LONDON, date(2026, 3, 30), 600, utc(2026, 3, 30, 9)),  # 10:00 BST
        (LONDON, date(2026, 3, 30), 1440, utc(2026, 3, 30, 23)),  # 24:00 = next midnight
    ],
)
def test_local_to_utc_across_dst(tz: ZoneInfo, day: date, minute: int, expected: datetime) -> None:
    assert local_to_utc(day, minute, tz) == expected


def test_a_missing_local_time_lands_after_the_gap() -> None:
    landed = local_to_utc(date(2026, 3, 8), 150, NEW_YORK).astimezone(NEW_YORK)
    assert (landed.hour, landed.minute) == (3, 30)


def test_all_night_window_handles_the_dst_day() -> None:
    always = SendWindow.parse("Mon-Sun 00:00-24:00", "none")
    spring = date(2026, 3, 29)
    assert always.closes_at(spring, LONDON) - always.opens_at(spring, LONDON) == timedelta(hours=23)
    autumn = date(2026, 10, 25)
    assert always.closes_at(autumn, LONDON) - always.opens_at(autumn, LONDON) == timedelta(hours=25)


def test_slot_moves_a_time_before_opening_to_the_opening() -> None:
    late_open = SendWindow.parse("Mon-Sat 11:00-20:00", "none")
    slot = late_open.slot(date(2026, 3, 3), 600, LONDON, utc(2026, 1, 1))
    assert slot == utc(2026, 3, 3, 11)


def test_slot_after_closing_goes_to_the_next_send_day() -> None:
    slot = DEFAULT.slot(date(2026, 3, 7), 600, LONDON, utc(2026, 3, 7, 20, 30))  # Saturday
    assert slot == utc(2026, 3, 9, 10)  # Monday at the preferred time


def test_slot_today_after_the_preferred_time_goes_now() -> None:
    now = utc(2026, 3, 3, 15, 7)
    assert DEFAULT.slot(date(2026, 3, 3), 600, LONDON, now) == now


def test_a_window_that_never_opens_is_an_error() -> None:
    window = SendWindow(frozenset(), 540, 1200, HolidayCalendar("none"))
    with pytest.raises(WindowError, match="never opens"):
        window.next_open(utc(2026, 3, 2), LONDON)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("Mon-Sat 09:00-20:00", "9am-8pm"),
        ("Mon-Fri 08:30-18:00", "8:30am-6pm"),
        ("Mon-Sun 00:00-24:00", "at any hour"),
        ("Mon-Sun 12:00-12:45", "12pm-12:45pm"),
    ],
)
def test_the_window_says_its_hours_in_words(spec: str, words: str) -> None:
    assert SendWindow.parse(spec, "none").hours() == words
