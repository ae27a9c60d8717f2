"""When a scheduled message may reach a phone: weekdays, hours and bank holidays, in local time.

The window is a policy of the clinic (default Mon-Sat 09:00-20:00, no bank holidays of the
clinic's region) applied in each patient's own timezone. Local wall-clock times are turned into
UTC with zoneinfo: a time that does not exist (spring forward) moves on by the gap, and a time
that happens twice (fall back) means its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_WINDOW_RE = re.compile(
    r"^\s*(?P<d1>[a-z]{3})(?:\s*-\s*(?P<d2>[a-z]{3}))?\s+"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$",
    re.IGNORECASE,
)


class WindowError(ValueError):
    """A send window or holiday region that cannot be used."""


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`, or a WindowError that names it."""
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise WindowError(
            f"unknown timezone {name!r} (use an IANA name like Europe/London)"
        ) from exc


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    if not name or name != name.strip():
        raise ValueError(name)
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def local_to_utc(day: date, minute_of_day: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time; 24:00 means the next day's midnight."""
    days, minute = divmod(minute_of_day, MINUTES_PER_DAY)
    local = datetime.combine(day + timedelta(days=days), time(minute // 60, minute % 60), tz)
    # fold=0: a repeated time means its first occurrence, and a missing time is read with the
    # offset before the change, which lands on the same wall time after the gap (02:30 -> 03:30).
    return local.astimezone(UTC)


@dataclass(frozen=True)
class HolidayCalendar:
    """Bank holidays of one region, e.g. GB-ENG (England), GB-SCT, US-NY, or none."""

    region: str
    _cache: dict[int, frozenset[date]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.region.lower() != "none":
            self._holidays_for(2000)  # fails now, at start-up, if the region is unknown

    def is_holiday(self, day: date) -> bool:
        if self.region.lower() == "none":
            return False
        return day in self._holidays_for(day.year)

    def _holidays_for(self, year: int) -> frozenset[date]:
        cached = self._cache.get(year)
        if cached is None:
            country, _, subdiv = self.region.partition("-")
            try:
                found = holidays_lib.country_holidays(
                    country.upper(), subdiv=subdiv.upper() or None, years=year
                )
            except NotImplementedError as exc:
                raise WindowError(
                    f"unknown holiday region {self.region!r} "
                    "(use e.g. GB-ENG, GB-SCT, US-NY or none)"
                ) from exc
            cached = frozenset(found.keys())
            self._cache[year] = cached
        return cached


@dataclass(frozen=True)
class SendWindow:
    """Allowed weekdays (0 = Monday) and local hours [start, end) in minutes since midnight."""

    weekdays: frozenset[int]
    start_minute: int
    end_minute: int
    calendar: HolidayCalendar

    @classmethod
    def parse(cls, spec: str, holiday_region: str = "GB-ENG") -> SendWindow:
        """Parse e.g. "Mon-Sat 09:00-20:00" or "Mon-Sun 00:00-24:00"."""
        match = _WINDOW_RE.match(spec)
        if not match:
            raise WindowError(
                f"send window {spec!r} is not like 'Mon-Sat 09:00-20:00' (days, then local hours)"
            )
        first = _day_index(match["d1"], spec)
        last = _day_index(match["d2"] or match["d1"], spec)
        span = (last - first) % 7
        weekdays = frozenset((first + i) % 7 for i in range(span + 1))
        start = _minutes(match["h1"], match["m1"], spec)
        end = _minutes(match["h2"], match["m2"], spec)
        if end <= start:
            raise WindowError(f"send window {spec!r} must end after it starts on the same day")
        return cls(weekdays, start, end, HolidayCalendar(holiday_region))

    def hours(self) -> str:
        """The window's hours as people say them: "9am-8pm", "8:30am-6pm", "at any hour"."""
        if self.start_minute == 0 and self.end_minute >= 24 * 60:
            return "at any hour"
        return f"{_clock(self.start_minute)}-{_clock(self.end_minute)}"

    def is_send_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and not self.calendar.is_holiday(day)

    def opens_at(self, day: date, tz: ZoneInfo) -> datetime:
        return local_to_utc(day, self.start_minute, tz)

    def closes_at(self, day: date, tz: ZoneInfo) -> datetime:
        return local_to_utc(day, self.end_minute, tz)

    def is_open(self, instant: datetime, tz: ZoneInfo) -> bool:
        day = instant.astimezone(tz).date()
        return self.is_send_day(day) and self.opens_at(day, tz) <= instant < self.closes_at(day, tz)

    def next_open(self, instant: datetime, tz: ZoneInfo) -> datetime:
        """`instant` itself if the window is open then, else the moment it next opens."""
        return self.slot(instant.astimezone(tz).date(), self.start_minute, tz, instant)

    def slot(self, day: date, minute_of_day: int, tz: ZoneInfo, not_before: datetime) -> datetime:
        """The first allowed send instant at `minute_of_day` local on `day` or a later send day.

        A preferred time outside the hours is moved to the window's opening; when `day` is
        today and the preferred time has passed, the message goes now if the window is still
        open, otherwise on the next send day.
        """
        minute = min(max(minute_of_day, self.start_minute), self.end_minute - 1)
        for offset in range(400):
            candidate_day = day + timedelta(days=offset)
            if not self.is_send_day(candidate_day):
                continue
            candidate = local_to_utc(candidate_day, minute, tz)
            if candidate >= not_before:
                return candidate
            if not_before < self.closes_at(candidate_day, tz):
                return max(not_before, self.opens_at(candidate_day, tz))
        raise WindowError("the send window never opens (check the weekdays and holiday region)")


def _day_index(name: str, spec: str) -> int:
    try:
        return DAY_NAMES.index(name.lower())
    except ValueError:
        raise WindowError(f"send window {spec!r}: {name!r} is not a day like Mon") from None


def _minutes(hours: str, minutes: str, spec: str) -> int:
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > MINUTES_PER_DAY:
        raise WindowError(f"send window {spec!r}: {hours}:{minutes} is not a time of day")
    return value


def _clock(minute: int) -> str:
    hour, rest = divmod(minute % (24 * 60), 60)
    suffix = "am" if hour < 12 else "pm"
    shown = hour % 12 or 12
    return f"{shown}{suffix}" if rest == 0 else f"{shown}:{rest:02d}{suffix}"
