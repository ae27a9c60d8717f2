"""One-off broadcasts: a message staff write once for a cohort of patients ("the clinic is
closed on Friday"), sent through the outbox like any step. Pure: the form read into a draft
(each problem naming its field), who in a cohort gets which channel (or why not), when each
patient's message is due (the send window and her one message a day), and a broadcast's
state from its rows. Storage and the send path are campaigns.broadcasts and
campaigns.sending.

A broadcast's outbox rows carry the step key `broadcast:<id>` and the kind of its purpose
(marketing or service), so every rule of the send path applies to them as to any step.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from campaigns.rules.consent import ConsentState
from campaigns.rules.contacts import check_language
from campaigns.rules.content import one_text
from campaigns.rules.errors import InputError, InputErrors
from campaigns.rules.pregnancy import TERM_DAYS
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus, StepKind
from campaigns.rules.window import SendWindow

STEP_PREFIX = "broadcast:"
#: A broadcast's message not sent within this long of its due time expires (the window stayed
#: shut, the channel was halted): a notice for this week is not sent next week.
VALID_FOR = timedelta(hours=72)
#: How many days on a patient's message may move to keep her one message a day.
CAP_SEARCH_DAYS = 14
#: Added to every marketing text: the opt-out every promotion carries (PECR).
OPT_OUT = "Reply STOP to end"
MAX_NAME = 100
MAX_SUBJECT = 120
MAX_BODY = 5000
MAX_WORDS = 1000
#: Texts or emails that speak of pregnancy are not sent to patients who asked for discreet
#: messages (someone else may read their phone): the same words the content checks use.
#: Words that would tell whoever reads her phone that she is pregnant or has had a baby.
PREGNANCY_WORDS = re.compile(
    r"pregnan|bab(?:y|ies)|bump|birth|midwi|antenatal|ante-natal|prenatal|postnatal|"
    r"post-natal|maternity|newborn|new-born|labour|labor\b|trimester|expecting|due date|"
    r"breastfe|breast-fe|nappy|nappies|obstetric|gestation|mum-to-be|mums-to-be",
    re.IGNORECASE,
)
_BLANK_LINE = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")


class Purpose(StrEnum):
    """What a broadcast is for, which decides whose consent it needs."""

    SERVICE = "service"  # a notice about the service: programme consent on the channel
    MARKETING = "marketing"  # an offer: marketing consent on the channel as well

    @property
    def kind(self) -> StepKind:
        return StepKind.MARKETING if self is Purpose.MARKETING else StepKind.SERVICE


class Status(StrEnum):
    """A broadcast's stored state; once its rows are written, `shown_status` tells whether
    it is still to go, going or gone."""

    DRAFT = "draft"
    AWAITING_APPROVAL = "awaiting_approval"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class Stage(StrEnum):
    ANY = "any"
    PREGNANT = "pregnant"  # by completed weeks of pregnancy
    AFTER_BIRTH = "after_birth"  # by days since the birth


#: Enrolment statuses a cohort may take: those whose messages can still go. A paused
#: patient gets it only if her messages are resumed before it is due.
COHORT_STATUSES = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)


@dataclass(frozen=True)
class Cohort:
    """Who a broadcast is for."""

    channels: frozenset[Channel]
    campaign: str | None = None  # None: every programme
    statuses: frozenset[EnrollmentStatus] = frozenset({EnrollmentStatus.ACTIVE})
    stage: Stage = Stage.ANY
    low: int | None = None  # weeks of pregnancy, or days after birth, from ...
    high: int | None = None  # ... to (both included)
    language: str | None = None  # None: every language

    def as_json(self) -> dict[str, Any]:
        return {
            "channels": sorted(c.value for c in self.channels),
            "campaign": self.campaign,
            "statuses": sorted(s.value for s in self.statuses),
            "stage": self.stage.value,
            "low": self.low,
            "high": self.high,
            "language": self.language,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cohort:
        return cls(
            channels=frozenset(Channel(c) for c in data["channels"]),
            campaign=data.get("campaign"),
            statuses=frozenset(EnrollmentStatus(s) for s in data["statuses"]),
            stage=Stage(data.get("stage", Stage.ANY.value)),
            low=data.get("low"),
            high=data.get("high"),
            language=data.get("language"),
        )

    def edd_range(self, day: date) -> tuple[date, date] | None:
        """Due dates that put `day` within the weeks of pregnancy asked for (completed weeks,
        as gestational age counts them), or None when the cohort is not by pregnancy."""
        if self.stage is not Stage.PREGNANT or self.low is None or self.high is None:
            return None
        # weeks = (280 - (edd - day)) // 7, so low <= weeks <= high when
        # day + 274 - 7 * high <= edd <= day + 280 - 7 * low.
        return (
            day + timedelta(days=TERM_DAYS - 6 - 7 * self.high),
            day + timedelta(days=TERM_DAYS - 7 * self.low),
        )

    def birth_range(self, day: date) -> tuple[date, date] | None:
        """Birth dates that put `day` within the days after birth asked for."""
        if self.stage is not Stage.AFTER_BIRTH or self.low is None or self.high is None:
            return None
        return day - timedelta(days=self.high), day - timedelta(days=self.low)

    def describe(self, campaign_names: Mapping[str, str] | None = None) -> str:
        """The cohort in staff words, for the list and the confirmation page."""
        names = campaign_names or {}
        parts = [
            "every programme"
            if self.campaign is None
            else f"programme {names.get(self.campaign, self.campaign)}",
            " or ".join(s.value.replace("_", " ") for s in sorted(self.statuses)),
        ]
        if self.stage is Stage.PREGNANT:
            parts.append(f"{self.low} to {self.high} weeks pregnant")
        elif self.stage is Stage.AFTER_BIRTH:
            parts.append(f"{self.low} to {self.high} days after birth")
        parts.append("any language" if self.language is None else f"language {self.language}")
        parts.append(" and ".join(CHANNEL_WORDS[c] for c in sorted(self.channels)))
        return ", ".join(parts)


CHANNEL_WORDS = {Channel.SMS: "text message", Channel.EMAIL: "email"}


@dataclass(frozen=True)
class Text:
    """What a broadcast says, as stored: the whole SMS (clinic name and opt-out included) and
    the email's subject and paragraphs (plain text: the email template escapes them)."""

    id: int
    name: str
    sms: str | None
    subject: str | None
    paragraphs: tuple[str, ...] = ()

    @property
    def step_key(self) -> str:
        return step_key(self.id)

    def ref(self, layout: str = "") -> str:
        """The record of what a patient received: the broadcast, and a hash of its words
        (with the email layout's own reference, for an email)."""
        words = "\x00".join([self.sms or "", self.subject or "", *self.paragraphs, layout])
        return f"{self.step_key}@{hashlib.sha256(words.encode()).hexdigest()[:12]}"

    def mentions_pregnancy(self) -> bool:
        return any(
            PREGNANCY_WORDS.search(words)
            for words in (self.sms or "", self.subject or "", *self.paragraphs)
        )


def step_key(broadcast_id: int) -> str:
    return f"{STEP_PREFIX}{broadcast_id}"


def broadcast_id(key: str) -> int | None:
    """The broadcast a step key names, or None for a campaign step (or a staff reply)."""
    if not key.startswith(STEP_PREFIX):
        return None
    rest = key.removeprefix(STEP_PREFIX)
    return int(rest) if rest.isdigit() else None


# -- the form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    name: str
    purpose: Purpose
    cohort: Cohort
    sms: str | None
    subject: str | None
    paragraphs: tuple[str, ...]


@dataclass
class _Reading:
    """The form's values, and every problem found in them, in the form's order."""

    values: Mapping[str, Any]
    problems: list[InputError] = field(default_factory=list)

    def text(self, name: str) -> str:
        value = self.values.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    def many(self, name: str) -> list[str]:
        value = self.values.get(name) or []
        return [value] if isinstance(value, str) else [str(v) for v in value]

    def problem(self, name: str, message: str) -> None:
        self.problems.append(InputError(name, message))

    def number(self, name: str, lowest: int, highest: int) -> int | None:
        raw = self.text(name)
        if not raw:
            self.problem(name, "enter a number")
            return None
        if not raw.isdigit() or not lowest <= int(raw) <= highest:
            self.problem(name, f"enter a whole number from {lowest} to {highest}")
            return None
        return int(raw)


def read_form(
    values: Mapping[str, Any], *, campaigns: Sequence[str], clinic_short_name: str
) -> Draft:
    """The new-broadcast form as a draft; InputErrors lists every problem, by field."""
    reading = _Reading(values)
    name = reading.text("name")
    if not name:
        reading.problem("name", "give the broadcast a name staff will know it by")
    elif len(name) > MAX_NAME:
        reading.problem("name", f"keep it to {MAX_NAME} characters")
    purpose = _purpose(reading)
    cohort = _cohort(reading, campaigns)
    sms = subject = None
    paragraphs: tuple[str, ...] = ()
    if cohort is not None and Channel.SMS in cohort.channels and purpose is not None:
        sms = _sms(reading, clinic_short_name, purpose, english=cohort.language in (None, "en"))
    if cohort is not None and Channel.EMAIL in cohort.channels:
        subject, paragraphs = _email(reading)
    if reading.problems:
        raise InputErrors(reading.problems)
    assert purpose is not None
    assert cohort is not None
    return Draft(name, purpose, cohort, sms, subject, paragraphs)


def _purpose(reading: _Reading) -> Purpose | None:
    try:
        return Purpose(reading.text("purpose"))
    except ValueError:
        reading.problem("purpose", "choose a service notice or an offer")
        return None


def _cohort(reading: _Reading, campaigns: Sequence[str]) -> Cohort | None:
    before = len(reading.problems)
    campaign = reading.text("campaign") or None
    if campaign is not None and campaign not in campaigns:
        reading.problem("campaign", "choose one of the programmes listed")
    statuses = frozenset(s for s in COHORT_STATUSES if s.value in reading.many("status"))
    if not statuses:
        reading.problem("status", "tick at least one")
    try:
        stage = Stage(reading.text("stage") or Stage.ANY.value)
    except ValueError:
        reading.problem("stage", "choose one of the stages listed")
        stage = Stage.ANY
    low = high = None
    if stage is not Stage.ANY:
        prefix, top = ("weeks", 42) if stage is Stage.PREGNANT else ("days", 365)
        low = reading.number(f"{prefix}_from", 0, top)
        high = reading.number(f"{prefix}_to", 0, top)
        if low is not None and high is not None and high < low:
            reading.problem(f"{prefix}_to", "must not be less than the first number")
    language = None
    if reading.text("language"):
        try:
            language = check_language(reading.text("language"))
        except InputError as exc:
            reading.problem("language", exc.message)
    channels = frozenset(c for c in Channel if c.value in reading.many("channels"))
    if not channels:
        reading.problem("channels", "tick text message, email or both")
    if len(reading.problems) > before:
        return None
    return Cohort(channels, campaign, statuses, stage, low, high, language)


def sms_body(clinic_short_name: str, words: str, purpose: Purpose) -> str:
    """The text as patients get it: the clinic's name first, on one line, and the opt-out
    at the end of an offer."""
    said = _SPACES.sub(" ", words).strip()
    body = f"{clinic_short_name}: {said}"
    return f"{body} {OPT_OUT}" if purpose is Purpose.MARKETING else body


def _sms(reading: _Reading, short_name: str, purpose: Purpose, *, english: bool) -> str | None:
    words = reading.text("sms")
    if not words:
        reading.problem("sms", "write the text message, or untick text message")
        return None
    if len(words) > MAX_WORDS:
        reading.problem("sms", "too long for one text")
        return None
    body = sms_body(short_name, words, purpose)
    added = f"“{short_name}: ” in front"
    if purpose is Purpose.MARKETING:
        added += f" and “{OPT_OUT}” at the end"
    try:
        one_text("sms", body, words, added, plain_only=english)
    except InputError as exc:
        reading.problems.append(exc)
        return None
    return body


def paragraphs_of(text: str) -> tuple[str, ...]:
    """A textarea's paragraphs (split at blank lines), each on one line."""
    found = (_SPACES.sub(" ", part).strip() for part in _BLANK_LINE.split(text.strip()))
    return tuple(p for p in found if p)


def _email(reading: _Reading) -> tuple[str | None, tuple[str, ...]]:
    subject = _SPACES.sub(" ", reading.text("subject")).strip()
    if not subject:
        reading.problem("subject", "write the email's subject, or untick email")
    elif len(subject) > MAX_SUBJECT:
        reading.problem("subject", f"keep it to {MAX_SUBJECT} characters")
    body = reading.text("body")
    paragraphs = paragraphs_of(body)
    if not paragraphs:
        reading.problem("body", "write the email, or untick email")
    elif len(body) > MAX_BODY:
        reading.problem("body", f"keep it to {MAX_BODY} characters")
    return subject or None, paragraphs


# -- who gets what --------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One enrollment of a patient in the cohort, with what decides whether she can be sent
    the broadcast on each channel (her enrollments come together, the preferred first)."""

    enrollment_id: int
    patient_id: int
    schedule_version: int
    channels: frozenset[Channel]  # the channels of this enrollment
    timezone: str
    discreet: bool
    addresses: Mapping[Channel, bool]  # a working address on the channel
    suppressed: frozenset[Channel]


class LeftOut(StrEnum):
    """Why a patient of the cohort gets no message, in the order they are told."""

    DISCREET = "discreet"
    NOT_ON_CHANNEL = "not_on_channel"
    NO_CONSENT = "no_consent"
    STOPPED = "stopped"
    NO_ADDRESS = "no_address"


LEFT_OUT_WORDS = {
    LeftOut.DISCREET: "asked for discreet messages, and this one speaks of pregnancy",
    LeftOut.NOT_ON_CHANNEL: "get their programme on another channel",
    LeftOut.NO_CONSENT: "have not agreed to messages of this kind",
    LeftOut.STOPPED: "stopped our messages (STOP or unsubscribe)",
    LeftOut.NO_ADDRESS: "have no working mobile number or email address for it",
}


@dataclass(frozen=True)
class Choice:
    """One patient's messages: (channel, enrollment id, schedule version) each; or why none."""

    sends: tuple[tuple[Channel, int, int], ...]
    left_out: LeftOut | None = None


def choose(
    enrollments: Sequence[Member],
    consent: ConsentState,
    channels: frozenset[Channel],
    purpose: Purpose,
    *,
    discreet_out: bool,
) -> Choice:
    """Which of her enrollments carries the broadcast on each channel (one message per
    channel, whatever the number of her enrollments), or why she gets none."""
    first = enrollments[0]
    if discreet_out and first.discreet:
        return Choice((), LeftOut.DISCREET)
    sends: list[tuple[Channel, int, int]] = []
    reasons: list[LeftOut] = []
    for channel in sorted(channels):
        carrier = next((e for e in enrollments if channel in e.channels), None)
        if carrier is None:
            reasons.append(LeftOut.NOT_ON_CHANNEL)
        elif not consent.allows(purpose.kind, channel):
            reasons.append(LeftOut.NO_CONSENT)
        elif channel in first.suppressed:
            reasons.append(LeftOut.STOPPED)
        elif not first.addresses.get(channel):
            reasons.append(LeftOut.NO_ADDRESS)
        else:
            sends.append((channel, carrier.enrollment_id, carrier.schedule_version))
    if sends:
        return Choice(tuple(sends))
    return Choice((), min(reasons, key=list(LeftOut).index))


# -- when ---------------------------------------------------------------------------------


def due_at(
    send_at: datetime,
    tz: ZoneInfo,
    window: SendWindow,
    busy: frozenset[date],
    first: datetime | None = None,
) -> datetime:
    """When her message is due: the chosen time, moved into the send window in her time zone
    (`first`, when the caller knows it already), and on to a later send day (at the same hour)
    if that day already holds a message for her (one message a patient a local day, as the
    programme keeps)."""
    if first is None:
        first = window.next_open(send_at, tz)
    local = first.astimezone(tz)
    if local.date() not in busy:
        return first
    minute = local.hour * 60 + local.minute
    for offset in range(1, CAP_SEARCH_DAYS + 1):
        slot = window.slot(local.date() + timedelta(days=offset), minute, tz, first)
        if slot.astimezone(tz).date() not in busy:
            return slot
    return first  # a fortnight with a message every day: it goes with the first


# -- what became of it -------------------------------------------------------------------------

SENT = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED})
TO_GO = frozenset(
    {MessageStatus.PENDING, MessageStatus.CLAIMED, MessageStatus.SENDING, MessageStatus.UNKNOWN}
)


@dataclass(frozen=True)
class Counts:
    sent: int = 0
    pending: int = 0
    not_sent: int = 0

    @classmethod
    def of(cls, by_status: Mapping[str, int]) -> Counts:
        sent = sum(n for s, n in by_status.items() if s in SENT)
        pending = sum(n for s, n in by_status.items() if s in TO_GO)
        return cls(sent, pending, sum(by_status.values()) - sent - pending)


def shown_status(status: Status, counts: Counts) -> str:
    """draft, awaiting approval, scheduled, sending, sent or cancelled."""
    if status is not Status.SCHEDULED:
        return status.value
    if counts.pending == 0:
        return "sent"
    if counts.sent or counts.not_sent:
        return "sending"
    return "scheduled"
