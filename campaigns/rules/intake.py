"""Reading an enrolment request from staff input (CLI, form, CSV row, API) into checked values.

Pure: the whole request is checked before anything is written; `check_enrollment` reports every
problem (one InputError per field, naming it by key), and `parse_enrollment` raises them all
as one InputErrors (itself the first problem, for callers that show one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
#: The fields in the order forms and the CSV header show them: problems are listed in it.
FORM_ORDER = {
    name: i
    for i, name in enumerate(
        [
            "campaign",
            "name",
            "phone",
            "email",
            "edd",
            "edd_source",
            "tz",
            "language",
            "channels",
            "consent",
            "clinic_ref",
        ]
    )
}


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
    #: Campaigns staff paused or ended for everyone (campaigns.campaign_states): no new
    #: enrolments until resumed.
    closed: Mapping[str, str] = field(default_factory=dict)


def parse_enrollment(
    fields: Mapping[str, str | None], rules: IntakeRules, now: datetime, *, row: int | None = None
) -> EnrollmentRequest:
    """Check one request; raises InputErrors(problems, row=row) listing every problem found
    (itself an InputError for the first problem, for callers that show one)."""
    request, problems = check_enrollment(fields, rules, now)
    if problems:
        raise InputErrors(problems, row=row)
    assert request is not None  # no problems: a request
    return request


def _campaign_key(given: str, catalog: Catalog) -> str:
    """The campaign's key from its key or its name in any case (a CSV may say either); the
    first campaign when none is given."""
    if not given:
        return catalog.default
    if given in catalog:
        return given
    wanted = given.casefold()
    return next((key for key in catalog if catalog[key].name.casefold() == wanted), given)


def check_enrollment(
    fields: Mapping[str, str | None], rules: IntakeRules, now: datetime
) -> tuple[EnrollmentRequest | None, list[InputError]]:
    """Check one request and report every problem (one per field), in the form's order."""
    problems: list[InputError] = []

    def text(name: str) -> str:
        return (fields.get(name) or "").strip()

    def checked(check: Callable[[], T]) -> T | None:
        try:
            return check()
        except InputError as exc:
            problems.append(exc)
            return None

    campaign = _campaign_key(text("campaign"), rules.catalog)
    if campaign not in rules.catalog:
        known = "; ".join(f"{rules.catalog[k].name} ({k})" for k in sorted(rules.catalog))
        problems.append(InputError("campaign", f"{campaign!r} is not a programme (known: {known})"))
    elif campaign in rules.closed:
        programme = rules.catalog[campaign].name
        problems.append(
            InputError(
                "campaign",
                f"{programme} is {rules.closed[campaign]} for everyone: nobody can be enrolled "
                "in it" + (" until it is resumed" if rules.closed[campaign] == "paused" else ""),
            )
        )
    name = checked(lambda: _name(text("name")))
    phone = (
        checked(lambda: normalise_phone(text("phone"), rules.phone_region))
        if text("phone")
        else None
    )
    email = checked(lambda: normalise_email(text("email"))) if text("email") else None
    edd_raw = text("edd")
    timezone = checked(lambda: check_timezone(text("tz") or rules.default_timezone, field="tz"))
    edd = checked(lambda: _edd(edd_raw, timezone or rules.default_timezone, now))
    edd_source = checked(lambda: _edd_source(text("edd_source")))
    language = checked(lambda: check_language(text("language") or "en"))
    channels = checked(lambda: _channels(text("channels") or "sms"))
    if channels is not None:
        if Channel.SMS in channels and phone is None and not text("phone"):
            problems.append(InputError("phone", "is needed to send tips by text message"))
        if Channel.EMAIL in channels and email is None and not text("email"):
            problems.append(InputError("email", "is needed to send tips by email"))
    consents = checked(lambda: _consents(text("consent")))
    if consents is not None:
        if ConsentPurpose.MARKETING_SMS in consents and not text("phone"):
            problems.append(InputError("consent", "offers by text need a mobile number"))
        if ConsentPurpose.MARKETING_EMAIL in consents and not text("email"):
            problems.append(InputError("consent", "offers by email need an email address"))
    if (
        problems
        or name is None
        or edd is None
        or edd_source is None
        or timezone is None
        or language is None
        or channels is None
        or consents is None
    ):
        problems.sort(key=lambda p: FORM_ORDER.get(p.field, len(FORM_ORDER)))  # stable
        return None, problems
    request = EnrollmentRequest(
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
    return request, []


def _name(name: str) -> str:
    if not name:
        raise InputError("name", "is required")
    if len(name) > 200:
        raise InputError("name", "is longer than 200 characters")
    return name


def _channels(raw: str) -> frozenset[Channel]:
    chosen = set()
    for part in filter(None, (p.strip().lower() for p in raw.split(","))):
        try:
            chosen.add(Channel(part))
        except ValueError:
            raise InputError(
                "channels", f"{part!r} is not a way to send tips (use sms, email)"
            ) from None
    if not chosen:
        raise InputError("channels", "choose text message, email or both")
    return frozenset(chosen)


def _edd(raw: str, timezone: str, now: datetime) -> date:
    if not raw:
        raise InputError("edd", "is required")
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
        raise InputError("consent", "the patient must agree to the programme's messages")
    return frozenset(chosen)


def _edd_source(raw: str) -> EddSource:
    if not raw:
        allowed = ", ".join(e.value for e in EddSource)
        raise InputError("edd_source", f"is required (one of {allowed})")
    try:
        return EddSource(raw.lower())
    except ValueError:
        allowed = ", ".join(e.value for e in EddSource)
        raise InputError("edd_source", f"{raw!r} is not one of {allowed}") from None


def parse_date(value: str, field: str) -> date:
    """A YYYY-MM-DD date from staff input, or an InputError naming the field."""
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise InputError(field, f"{value!r} is not a date like 2027-05-14") from None


def parse_edd_source(value: str) -> EddSource:
    return _edd_source(value.strip())
