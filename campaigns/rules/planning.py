"""Enrollment + campaign + send window -> the planned sends. Pure: no I/O, `now` is an argument.

The rules (docs/decisions.md, "Scheduling and planning"):
- a step is due on its anchor day plus its offset (gestational age for `edd`, days after the
  birth for `birth`, days after enrolment for `enrolment`), at the campaign's local send time in
  the patient's timezone, moved forward into the send window (weekdays, hours, bank holidays);
- at most one scheduled message per patient per local day: the SMS and the email of one step
  count as one message, and a step that collides moves to the next free send day;
- at most two scheduled messages in any seven local days, so a late joiner's catch-ups are
  spaced out (the welcome promises about one text a week): steps are placed in order of their
  target day, the catch-ups (most recent warning first) ahead of anything else, and a step
  that would make a third in a week moves to the first day that keeps the rule;
- a step whose day has passed is recorded `skipped`, except the latest missed `catch_up` step of
  each topic while its phase (pregnancy, or the weeks after birth) lasts: that one goes soon,
  unless the patient already had a warning of that topic or the step was already recorded as
  skipped;
- marketing steps are planned only on channels with marketing consent;
- a step already sent (or in flight) on a channel is never planned again on that channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from campaigns.rules.catalog import Campaign, Step
from campaigns.rules.pregnancy import pregnancy_start
from campaigns.rules.vocabulary import Anchor, Channel, MessageStatus, StepKind
from campaigns.rules.window import SendWindow, local_to_utc, zone


class SkipReason(StrEnum):
    BEFORE_ENROLMENT = "before_enrolment"
    DATE_PASSED = "date_passed"
    NO_MARKETING_CONSENT = "no_marketing_consent"


CATCH_UP = "catch_up"


@dataclass(frozen=True)
class PlanInput:
    """What planning needs to know about one enrollment."""

    timezone: str
    edd: date
    enrolled_on: date  # the patient's local date of enrolment
    channels: frozenset[Channel]
    marketing_channels: frozenset[Channel] = frozenset()
    birth_date: date | None = None
    #: (step, channel) pairs sent or in flight in an earlier version: never planned again.
    done: frozenset[tuple[str, Channel]] = frozenset()
    #: (step, channel) pairs already recorded as skipped or expired: not recorded again.
    recorded: frozenset[tuple[str, Channel]] = frozenset()
    #: Local dates already holding a message for this patient (the daily cap).
    busy_days: frozenset[date] = frozenset()


@dataclass(frozen=True)
class PlannedSend:
    step: Step
    channel: Channel
    status: MessageStatus  # PENDING or SKIPPED
    due_at: datetime  # UTC; for a skipped step, when it would have been due
    expires_at: datetime | None
    reason: str | None  # a SkipReason, CATCH_UP, or None for an ordinary send


@dataclass(frozen=True)
class _Candidate:
    step: Step
    channels: tuple[Channel, ...]
    target_day: date
    minute: int
    rank: tuple[int, int]
    reason: str | None


def plan(
    facts: PlanInput, campaign: Campaign, window: SendWindow, now: datetime
) -> list[PlannedSend]:
    """Every send to record for this enrollment's new schedule version, in due order."""
    work = _Plan(facts, campaign, window, now)
    for step in campaign.steps:
        work.consider(step)
    work.add_catch_ups()
    planned = _place(work.candidates, facts.busy_days, window, work.tz, now)
    return sorted(planned + work.skipped, key=lambda p: (p.due_at, p.step.key, p.channel))


class _Plan:
    """One plan being made: what is skipped, what is a candidate, which warnings were missed."""

    def __init__(
        self, facts: PlanInput, campaign: Campaign, window: SendWindow, now: datetime
    ) -> None:
        self.facts, self.campaign, self.window = facts, campaign, window
        self.tz = zone(facts.timezone)
        self.today = now.astimezone(self.tz).date()
        self.phase_open = {
            Anchor.ENROLMENT: False,
            Anchor.EDD: facts.birth_date is None,
            Anchor.BIRTH: _postpartum_open(facts, campaign, self.today),
        }
        self.skipped: list[PlannedSend] = []
        self.candidates: list[_Candidate] = []
        #: The latest missed step per catch-up topic: (its day, the step, its channels).
        self.missed: dict[str, tuple[date, Step, tuple[Channel, ...]]] = {}
        # A topic whose warning the patient already had needs no catch-up, whichever step.
        self.covered = {
            s.catch_up_topic
            for s in campaign.steps
            if s.catch_up and any((s.key, c) in facts.done for c in s.channels)
        }

    def skip(self, step: Step, channels: Iterable[Channel], day: date, reason: SkipReason) -> None:
        at = local_to_utc(day, self.campaign.send_minute, self.tz)
        self.skipped.extend(
            PlannedSend(step, c, MessageStatus.SKIPPED, at, None, reason)
            for c in channels
            if (step.key, c) not in self.facts.recorded
        )

    def consider(self, step: Step) -> None:
        facts = self.facts
        ideal_day = _ideal_day(step, facts)
        if ideal_day is None:
            return
        channels = tuple(
            c for c in step.channels if c in facts.channels and (step.key, c) not in facts.done
        )
        if not channels:
            return
        if ideal_day < self.today:
            self._passed(step, channels, ideal_day)
            return
        if step.kind is StepKind.MARKETING:
            refused = [c for c in channels if c not in facts.marketing_channels]
            self.skip(step, refused, ideal_day, SkipReason.NO_MARKETING_CONSENT)
            channels = tuple(c for c in channels if c in facts.marketing_channels)
            if not channels:
                return
        if step.anchor is Anchor.ENROLMENT:
            # The welcome goes as soon as the window allows, ahead of anything else that day.
            minute, rank = self.window.start_minute, (0, 0)
        else:
            minute, rank = self.campaign.send_minute, (2, ideal_day.toordinal())
        self.candidates.append(_Candidate(step, channels, ideal_day, minute, rank, None))

    def _passed(self, step: Step, channels: tuple[Channel, ...], ideal_day: date) -> None:
        """A step whose day has passed: skipped, unless it is its topic's latest missed
        warning while the phase is open (then it is caught up)."""
        open_ = self.phase_open[step.anchor]
        if step.catch_up and open_ and step.catch_up_topic not in self.covered:
            earlier = self.missed.get(step.catch_up_topic)
            if earlier is None or earlier[0] < ideal_day:
                if earlier is not None:
                    day, old, old_channels = earlier
                    self.skip(old, old_channels, day, _past_reason(day, self.facts))
                self.missed[step.catch_up_topic] = (ideal_day, step, channels)
                return
        self.skip(step, channels, ideal_day, _past_reason(ideal_day, self.facts))

    def add_catch_ups(self) -> None:
        for ideal_day, step, channels in self.missed.values():
            # A step already recorded as skipped stays skipped: that decision was made, shown.
            fresh = tuple(c for c in channels if (step.key, c) not in self.facts.recorded)
            if fresh:
                # Most recent warning first: it is the one that fits where the pregnancy is.
                rank = (1, -ideal_day.toordinal())
                self.candidates.append(
                    _Candidate(step, fresh, self.today, self.window.start_minute, rank, CATCH_UP)
                )


#: At most this many scheduled messages in any seven consecutive local days.
PER_WEEK = 2


def _week_full(day: date, busy: set[date]) -> bool:
    """Whether a message on `day` would make a seven-day run hold more than PER_WEEK."""
    near = sorted(b for b in busy if abs((b - day).days) < 7)
    if len(near) < PER_WEEK:
        return False
    return any(
        sum(1 for b in near if start <= b <= start + timedelta(days=6)) >= PER_WEEK
        for start in (day - timedelta(days=back) for back in range(7))
    )


def _ideal_day(step: Step, facts: PlanInput) -> date | None:
    offset = timedelta(days=step.offset.total_days)
    if step.anchor is Anchor.ENROLMENT:
        return facts.enrolled_on + offset
    if step.anchor is Anchor.EDD:
        # After a birth the pregnancy steps are over; the plan moves to the birth-anchored steps.
        return None if facts.birth_date is not None else pregnancy_start(facts.edd) + offset
    return None if facts.birth_date is None else facts.birth_date + offset


def _postpartum_open(facts: PlanInput, campaign: Campaign, today: date) -> bool:
    if facts.birth_date is None:
        return False
    last = max((s.offset.total_days for s in campaign.steps if s.anchor is Anchor.BIRTH), default=0)
    return today <= facts.birth_date + timedelta(days=last)


def _past_reason(ideal_day: date, facts: PlanInput) -> SkipReason:
    if ideal_day < facts.enrolled_on:
        return SkipReason.BEFORE_ENROLMENT
    return SkipReason.DATE_PASSED


def _place(
    candidates: list[_Candidate],
    busy_days: frozenset[date],
    window: SendWindow,
    tz: ZoneInfo,
    now: datetime,
) -> list[PlannedSend]:
    """Give each step the first free send slot from its target day on (one message a day, at
    most two in any seven days)."""
    busy = set(busy_days)
    placed: list[PlannedSend] = []
    for cand in sorted(candidates, key=lambda c: (c.target_day, c.rank)):
        day = cand.target_day
        while True:
            due = window.slot(day, cand.minute, tz, now)
            due_day = due.astimezone(tz).date()
            if due_day not in busy and not _week_full(due_day, busy):
                break
            day = due_day + timedelta(days=1)
        busy.add(due_day)
        expires = due + cand.step.validity
        placed.extend(
            PlannedSend(cand.step, c, MessageStatus.PENDING, due, expires, cand.reason)
            for c in cand.channels
        )
    return placed
