"""What to answer a patient's text, and what to do about it: pure rules over a classification.

The escalation table (CLINICAL.md section 4) as code. Safety comes first: a danger sign always
gets its safety answer (whatever else the text says, even from someone who opted out) and
never a booking link or anything else that sells. An opt-out or a loss found beside a danger
sign is still acted on. Someone who opted out hears back only for danger signs, START and HELP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from campaigns.keywords import SAFETY_INTENTS, TIERS, Classification, Intent, Tier

#: At most this many texts answer one message (two safety answers, or one and a confirmation).
MAX_REPLIES = 2
UNKNOWN_SENDER = "unknown_sender"
UNRECOGNISED = "unrecognised"
BIRTH_DATE = "birth_date"
BOOK_AFTER_SAFETY = "book_after_safety"


class Action(StrEnum):
    ALERT = "alert"
    MARKETING_HOLD = "marketing_hold"  # no marketing for 30 days after a safety answer
    END_FOR_LOSS = "end_for_loss"  # every enrollment ended, everything pending cancelled
    OPT_OUT = "opt_out"  # SMS suppressed, consent withdrawn, pending SMS cancelled
    RESUBSCRIBE = "resubscribe"  # consent granted again, suppression lifted, plan redone
    BOOKING_LINK = "booking_link"
    BIRTH_REPORTED = "birth_reported"  # staff asked to confirm a birth
    BIRTH_DATE = "birth_date"  # the date the patient gave, for staff to confirm


class Severity(StrEnum):
    RED = "red"
    AMBER = "amber"
    ROUTINE = "routine"  # a birth to confirm
    REVIEW = "review"  # a reply nobody could read automatically

    @classmethod
    def of_tier(cls, tier: Tier) -> Severity:
        """A danger sign's severity: RED for the RED tier, AMBER otherwise."""
        return cls.RED if tier is Tier.RED else cls.AMBER

    @property
    def emailed(self) -> bool:
        """RED and AMBER also go to the clinic's alert address."""
        return self in (Severity.RED, Severity.AMBER)


@dataclass(frozen=True)
class AlertSpec:
    severity: Severity
    kind: str  # an intent, or "book_after_safety"
    safety_reply: str | None = None


@dataclass(frozen=True)
class Situation:
    """What we know about the sender when their text arrives."""

    known: bool  # the number belongs to a patient
    opted_out: bool = False  # their SMS is withdrawn or suppressed
    opt_out_type: str | None = None  # Twilio Advanced Opt-Out already answered STOP/START/HELP
    recent_safety_reply: str | None = None  # a RED/AMBER alert fired in the last 24 hours
    awaiting_birth_date: bool = False  # we asked for the birth date and have none yet
    birth_date: date | None = None  # a date found in this text (looked for after a birth)


@dataclass(frozen=True)
class Decision:
    replies: tuple[str, ...]  # reply template keys, in order
    actions: tuple[Action, ...]
    alert: AlertSpec | None = None


def decide(found: Classification, situation: Situation) -> Decision:
    intents = found.intents
    if found.intent in SAFETY_INTENTS:
        return _safety(found, situation)
    if not situation.known:
        return _stranger(found, situation)
    replies: list[str] = []
    actions: list[Action] = []
    alert: AlertSpec | None = None
    answered_by_twilio = situation.opt_out_type is not None
    if Intent.LOSS in intents:
        return _loss(found, situation)
    top = found.intent
    if top is Intent.OPT_OUT:
        actions.append(Action.OPT_OUT)
        if not situation.opted_out and not answered_by_twilio:
            replies.append(_reply(found, Intent.OPT_OUT))  # one confirmation, never two
    elif top is Intent.RESUBSCRIBE:
        actions.append(Action.RESUBSCRIBE)
        if not answered_by_twilio:
            replies.append(_reply(found, Intent.RESUBSCRIBE))
    elif top is Intent.HELP:
        if not answered_by_twilio:
            replies.append(_reply(found, Intent.HELP))  # HELP is answered even after STOP
    elif situation.opted_out:
        # After an opt-out only danger signs, START and HELP are answered; what we could not
        # read (or a birth) still goes to staff, silently, in case it was a sign we missed.
        if top is Intent.UNRECOGNISED:
            alert = AlertSpec(Severity.REVIEW, Intent.UNRECOGNISED.value)
        elif top is Intent.BORN:
            actions.append(Action.BIRTH_REPORTED)
            alert = AlertSpec(Severity.ROUTINE, Intent.BORN.value)
    elif top is Intent.BOOK:
        if situation.recent_safety_reply:
            replies.append(situation.recent_safety_reply)
            alert = AlertSpec(Severity.AMBER, BOOK_AFTER_SAFETY, situation.recent_safety_reply)
        else:
            replies.append(_reply(found, Intent.BOOK))
            actions.append(Action.BOOKING_LINK)
    elif top is Intent.CRAMP:
        replies.append(_reply(found, Intent.CRAMP))
    elif top is Intent.BORN:
        # "She was born on 3 May": the date came with the news, so there is nothing to ask.
        replies.append(BIRTH_DATE if situation.birth_date else _reply(found, Intent.BORN))
        actions.append(Action.BIRTH_REPORTED)
        alert = AlertSpec(Severity.ROUTINE, Intent.BORN.value)
    elif situation.awaiting_birth_date and situation.birth_date is not None:
        replies.append(BIRTH_DATE)
        actions.append(Action.BIRTH_DATE)
    else:
        replies.append(UNRECOGNISED)
        alert = AlertSpec(Severity.REVIEW, Intent.UNRECOGNISED.value)
    return _decision(replies, actions, alert)


def _loss(found: Classification, situation: Situation) -> Decision:
    """A loss: everything stops, one gentle answer (none after an opt-out), staff told."""
    actions = [Action.END_FOR_LOSS]
    if Intent.OPT_OUT in found.intents:
        actions.append(Action.OPT_OUT)
    replies = [] if situation.opted_out else [_reply(found, Intent.LOSS)]
    return _decision(replies, actions, AlertSpec(Severity.AMBER, Intent.LOSS.value))


def _safety(found: Classification, situation: Situation) -> Decision:
    """Danger signs: the safety answers of the highest tier, an alert, a marketing hold."""
    top_tier = found.tier
    # A leg warning with headache or swollen hands also gets the pre-eclampsia answer.
    replies = list(
        dict.fromkeys(
            m.reply
            for m in found.matches
            if m.intent in SAFETY_INTENTS and TIERS[m.intent] is top_tier
        )
    )[:MAX_REPLIES]
    actions = [Action.ALERT]
    if situation.known:
        actions.append(Action.MARKETING_HOLD)
    intents = found.intents
    if Intent.LOSS in intents and situation.known:
        actions.append(Action.END_FOR_LOSS)
        if not situation.opted_out and len(replies) < MAX_REPLIES:
            replies.append(_reply(found, Intent.LOSS))
    if Intent.OPT_OUT in intents:
        actions.append(Action.OPT_OUT)
        if not situation.opted_out and len(replies) < MAX_REPLIES:
            replies.append(_reply(found, Intent.OPT_OUT))
    severity = Severity.of_tier(top_tier)
    return _decision(replies, actions, AlertSpec(severity, found.intent.value, replies[0]))


def _stranger(found: Classification, situation: Situation) -> Decision:
    """A number we do not know: no patient data, ever. STOP and HELP still work."""
    top = found.intent
    if top is Intent.OPT_OUT:
        replies = [] if situation.opt_out_type else [_reply(found, Intent.OPT_OUT)]
        return _decision(replies, [Action.OPT_OUT], None)
    if top is Intent.RESUBSCRIBE:
        replies = [] if situation.opt_out_type else [UNKNOWN_SENDER]
        return _decision(replies, [Action.RESUBSCRIBE], None)
    if top is Intent.HELP:
        return _decision([] if situation.opt_out_type else [_reply(found, Intent.HELP)], [], None)
    return _decision([UNKNOWN_SENDER], [], None)


def _reply(found: Classification, intent: Intent) -> str:
    match = found.match(intent)
    assert match is not None  # callers ask only for intents that matched
    return match.reply


def _decision(replies: list[str], actions: list[Action], alert: AlertSpec | None) -> Decision:
    if alert is not None and Action.ALERT not in actions:
        actions = [Action.ALERT, *actions]
    return Decision(tuple(replies[:MAX_REPLIES]), tuple(dict.fromkeys(actions)), alert)


_MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for name in names
}
_NUMERIC = re.compile(r"\b(\d{1,2})\s*[/.\-]\s*(\d{1,2})(?:\s*[/.\-]\s*(\d{2}|\d{4}))?\b")
_DAY_MONTH = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]+)\b")
_MONTH_DAY = re.compile(r"\b([a-z]+)\s+(\d{1,2})(?:st|nd|rd|th)?\b")


def birth_date_in(text: str, today: date) -> date | None:
    """A date written the UK way (03/05, 3/5/26, 3 May, May 3rd) on or before `today`.

    Without a year, the latest such date not after today. None if there is no usable date.
    """
    lowered = text.lower()
    found = _NUMERIC.search(lowered)
    if found:
        day, month = int(found.group(1)), int(found.group(2))
        year = _year(found.group(3))
    else:
        day = month = 0
        year = None
        named = _DAY_MONTH.search(lowered)
        if named and named.group(2) in _MONTHS:
            day, month = int(named.group(1)), _MONTHS[named.group(2)]
        else:
            named = _MONTH_DAY.search(lowered)
            if named and named.group(1) in _MONTHS:
                day, month = int(named.group(2)), _MONTHS[named.group(1)]
    if not day:
        return None
    for candidate_year in [year] if year else [today.year, today.year - 1]:
        try:
            found_date = date(candidate_year, month, day)
        except ValueError:
            return None
        if found_date <= today:
            return found_date
    return None


def _year(text: str | None) -> int | None:
    if not text:
        return None
    value = int(text)
    return value + 2000 if value < 100 else value
