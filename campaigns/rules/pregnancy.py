"""Gestational age, trimester labels and EDD validity: pure date arithmetic, no I/O.

Gestational age is counted from the EDD (Naegele: EDD = start of pregnancy + 280 days), in the
patient's own local date. Messages are placed by gestational week/day, never by trimester label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

TERM_DAYS = 280
#: Refuse an EDD more than 44 weeks ahead (a typo, or enrolment far too early).
MAX_DAYS_AHEAD = 44 * 7
#: Beyond 42+0 without a recorded end, the pregnancy status is unknown: stop and ask staff.
MAX_GESTATION_DAYS = 42 * 7


@dataclass(frozen=True, order=True)
class GestationalAge:
    days: int

    @property
    def weeks(self) -> int:
        return self.days // 7

    @property
    def day_of_week(self) -> int:
        return self.days % 7

    def __str__(self) -> str:
        return f"{self.weeks}+{self.day_of_week}"

    def words(self) -> str:
        """14 weeks 5 days: how pages say it (str() is the clinical shorthand 14+5)."""
        weeks = f"{self.weeks} week{'' if self.weeks == 1 else 's'}"
        if self.day_of_week == 0:
            return weeks
        return f"{weeks} {self.day_of_week} day{'' if self.day_of_week == 1 else 's'}"


def pregnancy_start(edd: date) -> date:
    """Day 0 of gestation as dated by the EDD."""
    return edd - timedelta(days=TERM_DAYS)


def gestational_age(edd: date, local_today: date) -> GestationalAge:
    return GestationalAge(TERM_DAYS - (edd - local_today).days)


def edd_for(local_today: date, weeks: int, days: int = 0) -> date:
    """The due date that puts `local_today` at weeks+days of gestation (the inverse of
    gestational_age)."""
    return local_today + timedelta(days=TERM_DAYS - (weeks * 7 + days))


def date_at_gestation(edd: date, weeks: int, days: int = 0) -> date:
    """The local date on which gestation reaches weeks+days."""
    return pregnancy_start(edd) + timedelta(weeks=weeks, days=days)


class TrimesterConvention(StrEnum):
    """Trimester boundaries differ between sources; they only change a display label."""

    NHS = "nhs"  # 0+0-12+6 | 13+0-27+6 | 28+0 on (NHS SNEE)
    HSE = "hse"  # to 13+6 | 14+0-26+6 | 27+0 on (HSE Ireland)
    ACOG = "acog"  # 0+0-13+6 | 14+0-27+6 | 28+0 on (ACOG/US)


# First day (in completed weeks) of the second and third trimester for each convention.
_TRIMESTER_STARTS: dict[TrimesterConvention, tuple[int, int]] = {
    TrimesterConvention.NHS: (13, 28),
    TrimesterConvention.HSE: (14, 27),
    TrimesterConvention.ACOG: (14, 28),
}


def trimester(
    age: GestationalAge, convention: TrimesterConvention = TrimesterConvention.NHS
) -> int:
    """1, 2 or 3. Before day 0 counts as the first trimester; past term stays in the third."""
    second, third = _TRIMESTER_STARTS[convention]
    if age.weeks >= third:
        return 3
    if age.weeks >= second:
        return 2
    return 1


def trimester_label(
    age: GestationalAge, convention: TrimesterConvention = TrimesterConvention.NHS
) -> str:
    return ("first", "second", "third")[trimester(age, convention) - 1] + " trimester"


class EddError(ValueError):
    """An EDD that cannot be right for a patient being enrolled or re-dated today."""


def check_edd(edd: date, local_today: date, *, pregnancy_ended: bool = False) -> GestationalAge:
    """Return today's gestational age, or raise EddError saying what is wrong with the EDD."""
    ahead = (edd - local_today).days
    if ahead > MAX_DAYS_AHEAD:
        raise EddError(
            f"{edd.isoformat()} is more than 44 weeks after today ({local_today.isoformat()})"
        )
    age = gestational_age(edd, local_today)
    if age.days > MAX_GESTATION_DAYS and not pregnancy_ended:
        raise EddError(
            f"{edd.isoformat()} puts today at {age.words()}, past "
            "42 weeks, and no birth or end of pregnancy is recorded"
        )
    return age


def is_overdue_unconfirmed(edd: date, local_today: date) -> bool:
    """Past 42+0 with no recorded end: pregnancy messages pause until staff confirm status."""
    return gestational_age(edd, local_today).days > MAX_GESTATION_DAYS
