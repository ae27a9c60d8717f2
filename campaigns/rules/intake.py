"""Reading an enrolment request from staff input (CLI, form, CSV row, API) into checked values.

Pure: the whole request is checked before anything is written, and every problem is reported
(InputErrors, one InputError per field, naming the field and the CSV row when there is one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from campaigns.rules.catalog import Catalog
from campaigns.rules.contacts import (
    check_language,
    check_timezone,
    normalise_email,
    normalise_phone,
)
from campaigns.rules.errors import InputError, InputErrors
from campaigns.rules.pregnancy import EddError, check_edd
from campaigns.rules.vocabulary import Channel, ConsentPurpose, EddSource
from campaigns.rules.window import zone

T = TypeVar("T")


@dataclass(frozen=True)
class EnrollmentRequest:
    campaign: str
    name: str
    phone: str | None
    email: str | None
    edd: date
    edd_source: EddSource
    timezone: str
    language: str
    channels: frozenset[Channel]
    consents: frozenset[ConsentPurpose]
    discreet: bool = False
    clinic_ref: str | None = None


@dataclass(frozen=True)
class IntakeRules:
    catalog: Catalog
    phone_region: str
    default_timezone: str


def parse_enrollment(
    fields: Mapping[str, str | None], rules: IntakeRules, now: datetime, *, row: int | None = None
) -> EnrollmentRequest:
    """Check one request; raises InputErrors(problems, row=row) listing every problem found
    (itself an InputError for the first problem, for callers that show one)."""
    try:
        return _parse(fields, rules, now)
    except InputErrors as exc:
        raise InputErrors(exc.problems, row=row) from None


def _parse(
    fields: Mapping[str, str | None], rules: IntakeRules, now: datetime
) -> EnrollmentRequest:
    problems: list[InputError] = []

    def text(name: str) -> str:
        return (fields.get(name) or "").strip()

    def check(step: Callable[[], T]) -> T | None:
        """The step's value, or None with its problem noted (each field is checked alone)."""
        try:
            return step()
        except InputError as exc:
            problems.append(exc)
            return None

    campaign = text("campaign") or rules.catalog.default
    if campaign not in rules.catalog:
        known = ", ".join(sorted(rules.catalog))
        problems.append(InputError("campaign", f"{campaign!r} is not a campaign (known: {known})"))
    name = text("name")
    if not name:
        problems.append(InputError("name", "is required"))
    elif len(name) > 200:
        problems.append(InputError("name", "is longer than 200 characters"))

    channels = check(lambda: _channels(text("channels") or "sms")) or frozenset()
    phone = (
        check(lambda: normalise_phone(text("phone"), rules.phone_region)) if text("phone") else None
    )
    email = check(lambda: normalise_email(text("email"))) if text("email") else None
    if Channel.SMS in channels and not text("phone"):
        problems.append(InputError("phone", "is required for the sms channel"))
    if Channel.EMAIL in channels and not text("email"):
        problems.append(InputError("email", "is required for the email channel"))

    timezone = check(lambda: check_timezone(text("tz") or rules.default_timezone, field="tz"))
    language = check(lambda: check_language(text("language") or "en"))
    edd = check(lambda: _edd(text("edd"), timezone or rules.default_timezone, now))
    edd_source = check(lambda: _edd_source(text("edd_source")))
    consents = check(lambda: _consents(text("consent"))) or frozenset()
    if ConsentPurpose.MARKETING_SMS in consents and not text("phone"):
        problems.append(InputError("consent", "marketing_sms needs a phone number"))
    if ConsentPurpose.MARKETING_EMAIL in consents and not text("email"):
        problems.append(InputError("consent", "marketing_email needs an email address"))
    if problems or timezone is None or language is None or edd is None or edd_source is None:
        raise InputErrors(problems)  # a value is None only when its problem is listed
    return EnrollmentRequest(
        campaign=campaign,
        name=name,
        phone=phone,
        email=email,
        edd=edd,
        edd_source=edd_source,
        timezone=timezone,
        language=language,
        channels=channels,
        consents=consents,
        discreet=text("discreet").lower() in {"1", "true", "yes", "y"},
        clinic_ref=text("clinic_ref") or None,
    )


def _channels(raw: str) -> frozenset[Channel]:
    chosen = set()
    for part in filter(None, (p.strip().lower() for p in raw.split(","))):
        try:
            chosen.add(Channel(part))
        except ValueError:
            raise InputError("channels", f"{part!r} is not a channel (use sms, email)") from None
    if not chosen:
        raise InputError("channels", "choose at least one of sms, email")
    return frozenset(chosen)


def _edd(raw: str, timezone: str, now: datetime) -> date:
    if not raw:
        raise InputError("edd", "is required (YYYY-MM-DD)")
    try:
        edd = date.fromisoformat(raw)
    except ValueError:
        raise InputError("edd", f"{raw!r} is not a date like 2027-05-14") from None
    try:
        check_edd(edd, now.astimezone(zone(timezone)).date())
    except EddError as exc:
        raise InputError("edd", str(exc)) from None
    return edd


def _consents(raw: str) -> frozenset[ConsentPurpose]:
    chosen = set()
    for part in filter(None, (p.strip().lower() for p in raw.split(","))):
        try:
            chosen.add(ConsentPurpose(part))
        except ValueError:
            allowed = ", ".join(p.value for p in ConsentPurpose)
            raise InputError("consent", f"{part!r} is not a consent (use {allowed})") from None
    if ConsentPurpose.PROGRAMME not in chosen:
        raise InputError(
            "consent",
            "the patient's explicit consent to the programme is required (--consent programme)",
        )
    return frozenset(chosen)


def _edd_source(raw: str) -> EddSource:
    if not raw:
        raise InputError("edd_source", "is required (scan|lmp|patient|clinician)")
    try:
        return EddSource(raw.lower())
    except ValueError:
        allowed = "|".join(e.value for e in EddSource)
        raise InputError("edd_source", f"{raw!r} is not one of {allowed}") from None


def parse_date(value: str, field: str) -> date:
    """A YYYY-MM-DD date from staff input, or an InputError naming the field."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(field, f"{value!r} is not a date like 2027-05-14") from None


def parse_edd_source(value: str) -> EddSource:
    return _edd_source(value.strip())
