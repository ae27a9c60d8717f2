"""What to answer a patient's text, and what to do about it: pure rules over a classification.

The escalation table (docs/clinical-safety.md) as code. Safety comes first: every danger sign
found gets its safety answer, most urgent first (whatever else the text says, even from someone
who opted out or a number we do not know), and never a booking link or anything else that
sells. An opt-out or a loss report found beside a danger sign is still acted on. A text never
ends a programme: a report of the patient's own loss puts her messages on a loss hold (nothing
further goes out) until staff confirm or clear it; a mere mention of loss changes nothing and
goes to staff. Whatever nobody could read reaches staff, from anyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from campaigns.rules.keywords import SAFETY_INTENTS, Classification, Intent, Tier

UNKNOWN_SENDER = "unknown_sender"
UNRECOGNISED = "unrecognised"
#: "Thank you, our team will read this" with the safety line: no condolence, no diagnosis.
NOTED = "noted"
BIRTH_DATE = "birth_date"
BOOK_AFTER_SAFETY = "book_after_safety"
#: Alert kind for a text whose only danger words were negated or gone ("no swelling now").
SET_ASIDE = "set_aside"


class Action(StrEnum):
    ALERT = "alert"
    MARKETING_HOLD = "marketing_hold"  # no marketing for 30 days after a safety answer
    LOSS_HOLD = "loss_hold"  # every live enrollment held, pending sends cancelled, staff decide
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
    kind: str  # an intent, or "book_after_safety", "set_aside"
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


def safety_replies(found: Classification) -> list[str]:
    """Every danger sign's answer, most urgent first, each once."""
    return list(dict.fromkeys(m.reply for m in found.matches if m.intent in SAFETY_INTENTS))


def decide(found: Classification, situation: Situation) -> Decision:
    if found.intent in SAFETY_INTENTS:
        return _safety(found, situation)
    if not situation.known:
        return _stranger(found, situation)
    if Intent.LOSS in found.intents:
        return _loss(found, situation)
    if found.intent is Intent.LOSS_MENTION:
        return _mention(found, situation)
    replies: list[str] = []
    actions: list[Action] = []
    alert: AlertSpec | None = None
    answered_by_twilio = situation.opt_out_type is not None
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
        alert = _unread(found)
        if top is Intent.BORN:
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
        alert = _unread(found)
    if alert is None and found.set_aside:
        # Danger words we set aside ("no swelling now"): a person still reads the text.
        alert = AlertSpec(Severity.REVIEW, SET_ASIDE)
    return _decision(replies, actions, alert)


def _unread(found: Classification) -> AlertSpec | None:
    """Staff read what no list could: emailed when it is not English (it may be a danger sign
    in a language we have no list for)."""
    if found.intent is Intent.UNREADABLE:
        return AlertSpec(Severity.AMBER, Intent.UNREADABLE.value)
    if found.intent is Intent.UNRECOGNISED:
        return AlertSpec(Severity.REVIEW, Intent.UNRECOGNISED.value)
    return None


def _mention(found: Classification, situation: Situation) -> Decision:
    """Nothing is decided by a mention of loss: no condolence, no hold; staff read it."""
    replies: list[str] = []
    actions: list[Action] = []
    if Intent.OPT_OUT in found.intents:
        actions.append(Action.OPT_OUT)
        if not situation.opted_out and situation.opt_out_type is None:
            replies.append(_reply(found, Intent.OPT_OUT))
    elif not situation.opted_out:
        replies.append(NOTED)
    return _decision(replies, actions, AlertSpec(Severity.REVIEW, Intent.LOSS_MENTION.value))


def _loss(found: Classification, situation: Situation) -> Decision:
    """Her own loss, told now: her messages are held at once, one gentle answer (none after an
    opt-out), and staff asked to confirm or clear the hold."""
    actions = [Action.LOSS_HOLD]
    if Intent.OPT_OUT in found.intents:
        actions.append(Action.OPT_OUT)
    replies = [] if situation.opted_out else [_reply(found, Intent.LOSS)]
    return _decision(replies, actions, AlertSpec(Severity.AMBER, Intent.LOSS.value))


def _safety(found: Classification, situation: Situation) -> Decision:
    """Danger signs: every safety answer, an alert, a marketing hold."""
    replies = safety_replies(found)
    actions = [Action.ALERT]
    if situation.known:
        actions.append(Action.MARKETING_HOLD)
    intents = found.intents
    if Intent.LOSS in intents and situation.known:
        actions.append(Action.LOSS_HOLD)
        if not situation.opted_out:
            replies.append(_reply(found, Intent.LOSS))
    if Intent.OPT_OUT in intents:
        actions.append(Action.OPT_OUT)
        if not situation.opted_out and not situation.opt_out_type:
            replies.append(_reply(found, Intent.OPT_OUT))
    severity = Severity.of_tier(found.tier)
    return _decision(replies, actions, AlertSpec(severity, found.intent.value, replies[0]))


def _stranger(found: Classification, situation: Situation) -> Decision:
    """A number we do not know: no patient data, ever. STOP and HELP still work, and whatever
    else they wrote reaches staff (a loss, or a text that is not English, emailed)."""
    top = found.intent
    if top is Intent.OPT_OUT:
        replies = [] if situation.opt_out_type else [_reply(found, Intent.OPT_OUT)]
        return _decision(replies, [Action.OPT_OUT], None)
    if top is Intent.RESUBSCRIBE:
        replies = [] if situation.opt_out_type else [UNKNOWN_SENDER]
        return _decision(replies, [Action.RESUBSCRIBE], None)
    if top is Intent.HELP:
        return _decision([] if situation.opt_out_type else [_reply(found, Intent.HELP)], [], None)
    if top is Intent.LOSS:
        alert = AlertSpec(Severity.AMBER, Intent.LOSS.value)
    else:
        alert = _unread(found) or AlertSpec(Severity.REVIEW, top.value)
    return _decision([UNKNOWN_SENDER], [], alert)


def _reply(found: Classification, intent: Intent) -> str:
    match = found.match(intent)
    assert match is not None  # callers ask only for intents that matched
    return match.reply


def _decision(replies: list[str], actions: list[Action], alert: AlertSpec | None) -> Decision:
    if alert is not None and Action.ALERT not in actions:
        actions = [Action.ALERT, *actions]
    return Decision(tuple(dict.fromkeys(replies)), tuple(dict.fromkeys(actions)), alert)


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


@dataclass(frozen=True)
class Inbound:
    """A patient's text as the provider gave it (campaigns.web.webhooks reads Twilio's form)."""

    provider_id: str  # the provider's id for it (Twilio's MessageSid)
    sender: str  # E.164
    body: str
    #: The provider's own opt-out keyword verdict (Twilio's Advanced Opt-Out: STOP, START,
    #: HELP), which counts even when our word lists missed (another language).
    opt_out_type: str | None = None
