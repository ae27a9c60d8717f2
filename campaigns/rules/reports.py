"""What the staff reports count and how, as pure rules: the period asked for, the line a message
belongs to, where an opt-out came from, which message a reply, a click or an opt-out followed,
a pregnancy's stage, and percentiles. No database: campaigns.rollups and campaigns.reports use
these on what they read.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from campaigns.rules.errors import InputError
from campaigns.rules.pregnancy import TrimesterConvention, gestational_age, trimester
from campaigns.rules.vocabulary import ConsentSource, EnrollmentStatus, MessageStatus, StepKind

#: Lines of their own, beside the campaigns: texts staff wrote in the inbox, one-off broadcasts,
#: and what followed no message at all (a reply from an unknown number, an opt-out out of the
#: blue). Campaign keys never start with ":" (catalog keys are slugs).
STAFF_REPLIES = ":staff_replies"
BROADCASTS = ":broadcasts"
NO_MESSAGE = ""
BROADCAST_PREFIX = "broadcast:"
LINE_NAMES = {
    STAFF_REPLIES: "Staff replies",
    BROADCASTS: "Broadcasts",
    NO_MESSAGE: "Not after a message",
}

#: A reply, a booking-link click or an opt-out counts against the patient's latest message
#: sent this long before it, if any (the "after each step" figures).
AFTER = timedelta(days=7)
#: The longest period one report covers.
LONGEST = timedelta(days=5 * 366)

#: The provider accepted these: they count as sent.
SENT = (
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.UNDELIVERED,
    MessageStatus.BOUNCED,
)
NOT_DELIVERED = (MessageStatus.UNDELIVERED, MessageStatus.BOUNCED)
WAITING = (MessageStatus.PENDING, MessageStatus.CLAIMED, MessageStatus.SENDING)

# Metric names in the rollups (report_daily.metric).
MESSAGE = "msg:"  # + a status
CLICK = "click"
OPT_OUT = "optout:"  # + a route
REPLY = "reply:"  # + an intent
ENROLMENT = "enrol:"  # + a source
STAGE = "stage:"  # + a stage

#: Where an opt-out came from, by the consent ledger's source.
ROUTES = {
    ConsentSource.KEYWORD.value: "keyword",
    ConsentSource.LINK.value: "link",
    ConsentSource.PROVIDER.value: "provider",
}
ROUTE_NAMES = {
    "keyword": "Texted STOP",
    "link": "Unsubscribe link",
    "provider": "Provider or carrier",
    "staff": "Recorded by staff",
}
SOURCE_NAMES = {
    ConsentSource.FORM.value: "Staff form",
    ConsentSource.CSV.value: "CSV import",
    ConsentSource.API.value: "API",
    ConsentSource.CLI.value: "Command line",
    ConsentSource.STAFF.value: "Staff",
    ConsentSource.PHONE.value: "By telephone",
    ConsentSource.IN_PERSON.value: "In person",
    "unknown": "Not recorded",
}
STAGES = (
    "first_trimester",
    "second_trimester",
    "third_trimester",
    "after_birth",
    EnrollmentStatus.PAUSED.value,
    EnrollmentStatus.LOSS_HOLD.value,
    EnrollmentStatus.COMPLETED.value,
    EnrollmentStatus.ENDED_LOSS.value,
    EnrollmentStatus.STOPPED.value,
)
STAGE_NAMES = {
    "first_trimester": "First trimester",
    "second_trimester": "Second trimester",
    "third_trimester": "Third trimester",
    "after_birth": "After the birth",
    "paused": "Paused",
    "loss_hold": "Loss told, waiting for staff",
    "completed": "Finished the programme",
    "ended_loss": "Ended: pregnancy loss",
    "stopped": "Stopped",
}


def line_of(campaign: str | None, step_key: str, kind: str) -> tuple[str, str]:
    """The (campaign line, step) a message is counted under. Staff replies are one step (each
    has its own key); a broadcast is a step of the Broadcasts line; any other step key is kept
    as it is, known to the catalog or not."""
    if kind == StepKind.STAFF_REPLY.value:
        return STAFF_REPLIES, ""
    if step_key.startswith(BROADCAST_PREFIX):
        return BROADCASTS, step_key[len(BROADCAST_PREFIX) :]
    return campaign or NO_MESSAGE, step_key


def route_of(source: str) -> str:
    """keyword, link, provider, or staff (anything a member of staff recorded)."""
    return ROUTES.get(source, "staff")


@dataclass(frozen=True, order=True)
class Sent:
    """One message a patient was sent, as attribution needs it."""

    at: datetime
    channel: str
    campaign: str
    step: str


def attribute(anchor: datetime, channel: str | None, sends: Sequence[Sent]) -> Sent | None:
    """The patient's latest message (on `channel`, if given) sent at or before `anchor` and no
    more than AFTER before it; `sends` in time order."""
    end = bisect.bisect_right(sends, anchor, key=lambda s: s.at)
    for sent in reversed(sends[:end]):
        if sent.at < anchor - AFTER:
            return None
        if channel is None or sent.channel == channel:
            return sent
    return None


def stage_of(
    status: str,
    birth_known: bool,
    edd: date,
    today: date,
    convention: TrimesterConvention = TrimesterConvention.NHS,
) -> str:
    """An enrollment's stage: its trimester or "after_birth" while active, else its status."""
    if status != EnrollmentStatus.ACTIVE.value:
        return status
    if birth_known:
        return "after_birth"
    number = trimester(gestational_age(edd, today), convention)
    return ("first_trimester", "second_trimester", "third_trimester")[number - 1]


def percentile(values: Sequence[float], share: float) -> float | None:
    """The `share` (0..1) percentile of sorted `values`, interpolated between neighbours (as
    PostgreSQL's percentile_cont); None for none."""
    if not values:
        return None
    place = share * (len(values) - 1)
    low = int(place)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (place - low)


# -- the period ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # inclusive
    preset: str = ""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range(self.days)]


PRESETS = {
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "month": "This month",
    "last-month": "Last month",
    "365d": "Last 12 months",
}


def preset(name: str, today: date) -> Period:
    if name == "7d":
        return Period(today - timedelta(days=6), today, name)
    if name == "30d":
        return Period(today - timedelta(days=29), today, name)
    if name == "month":
        return Period(today.replace(day=1), today, name)
    if name == "last-month":
        end = today.replace(day=1) - timedelta(days=1)
        return Period(end.replace(day=1), end, name)
    if name == "365d":
        return Period(today - timedelta(days=364), today, name)
    raise InputError("Period", f"{name[:20]!r} is not one of the periods offered")


def parse_period(start: str, end: str, chosen: str, today: date) -> Period:
    """The period from the form: a preset, or From and To (clinic-local dates, both included;
    either alone: a month from or to it). Default: the last 30 days."""
    if chosen.strip() and not (start.strip() or end.strip()):
        return preset(chosen.strip(), today)
    first = _day(start, "From")
    last = _day(end, "To")
    if first is None and last is None:
        return preset("30d", today)
    if first is None:
        assert last is not None
        first = last - timedelta(days=29)
    if last is None:
        last = min(today, first + timedelta(days=29))
    if last < first:
        raise InputError("To", "is before From: choose a To date on or after the From date")
    if last - first >= LONGEST:
        raise InputError("To", "is more than five years after From: choose a shorter period")
    return Period(first, last)


def _day(text: str, name: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InputError(name, f"{text.strip()[:20]!r} is not a date like 2027-03-01") from None


def month_name(day: date) -> str:
    return f"{calendar.month_abbr[day.month]} {day.year}"
