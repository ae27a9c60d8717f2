"""Staff words: what each field is called on a page, gestation as "14 weeks 5 days", and the one
way dates and times are written (in the clinic's or the patient's time zone).

Pure. The code names fields by their keys (`edd`, `tz`); people see these labels, never the
keys, a command-line flag or a masked copy of what they typed themselves.
"""

from __future__ import annotations

from datetime import date, datetime

from campaigns.rules.pregnancy import GestationalAge
from campaigns.rules.window import zone

#: Each field key (form field, CSV column, InputError.field) and its name on the page.
LABELS: dict[str, str] = {
    "campaign": "Campaign",
    "name": "Full name",
    "phone": "Mobile number",
    "email": "Email address",
    "edd": "Due date",
    "edd_source": "Where the due date comes from",
    "tz": "Time zone",
    "timezone": "Time zone",
    "language": "Language",
    "channels": "Send tips by",
    "consent": "Consent",
    "consents": "Consent",
    "discreet": "Discreet wording",
    "clinic_ref": "Clinic reference",
    "birth_date": "Birth date",
    "confirm": "Confirm",
    "enrolled": "Enrolment date",
    "start": "Start date",
    "role": "Role",
    "current_password": "Your current password",
    "new_password": "New password",
    "confirm_password": "New password again",
    "file": "File",
    # A step's words (campaigns.rules.content_checks)
    "sms": "Text message",
    "subject": "Email subject",
    "body": "Email body",
}

DAY_FORMAT = "%-d %b %Y"  # 6 Dec 2026
TIME_FORMAT = "%-d %b %Y, %H:%M"  # 6 Dec 2026, 14:05


def step_name(step_key: str) -> str:
    """A message's step in staff words: a campaign step by its key ("clot-warning-signs"), a
    staff reply or a broadcast by what it is, not its internal "kind:id" key."""
    kind, _, rest = step_key.partition(":")
    if not rest:
        return step_key
    if kind == "broadcast":
        return f"Broadcast {rest}"
    if kind == "staff_reply":
        return "Staff reply"
    return step_key


def label(field: str) -> str:
    """The staff words for a field key; an unknown key reads as words, never as a code."""
    return LABELS.get(field) or field.replace("_", " ").capitalize()


def weeks_and_days(age: GestationalAge) -> str:
    """14 weeks 5 days (not 14+5)."""
    return age.words()


def day(value: date | None) -> str:
    """6 Dec 2026."""
    return "" if value is None else value.strftime(DAY_FORMAT)


def moment(instant: datetime | None, timezone: str, *, clinic: str | None = None) -> str:
    """6 Dec 2026, 14:05 in that time zone; its abbreviation is added when it is not the
    clinic's own (a patient abroad)."""
    if instant is None:
        return ""
    local = instant.astimezone(zone(timezone))
    shown = local.strftime(TIME_FORMAT)
    if clinic is not None and timezone != clinic:
        shown += f" {local.strftime('%Z')}"
    return shown
