"""Reading what staff type in: phone numbers, email addresses, timezones, languages.

Pure: every function returns the normalised value or raises InputError naming the field. Logs
and errors show only masked contact details.
"""

from __future__ import annotations

import hashlib
import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from campaigns.rules.errors import InputError
from campaigns.rules.window import WindowError, zone

_MOBILE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


def normalise_phone(raw: str, region: str = "GB", *, field: str = "phone") -> str:
    """E.164 for a valid mobile number; a landline cannot receive our texts."""
    text = raw.strip()
    if not text:
        raise InputError(field, "is empty")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise _phone_error(field, text, "is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise _phone_error(field, text, "is not a valid phone number")
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise _phone_error(field, text, "is not a mobile number, so it cannot get texts")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_error(field: str, typed: str, problem: str) -> InputError:
    """Masked in the message (logs), as typed in `plain` (shown back to whoever typed it)."""
    return InputError(field, f"{mask_phone(typed)} {problem}", plain=f"{typed} {problem}")


def normalise_email(raw: str, *, field: str = "email") -> str:
    text = raw.strip()
    if not text:
        raise InputError(field, "is empty")
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        reason = str(exc)
        raise InputError(
            field,
            f"{mask_email(text)} is not a valid email address ({reason})",
            plain=f"{text} is not a valid email address ({reason})",
        ) from None


def check_timezone(raw: str, *, field: str = "timezone") -> str:
    try:
        zone(raw.strip())
    except WindowError as exc:
        raise InputError(field, str(exc)) from None
    return raw.strip()


def check_language(raw: str, *, field: str = "language") -> str:
    text = raw.strip()
    if not _LANGUAGE_RE.match(text):
        raise InputError(field, f"{text!r} is not a language code like en or pl")
    return text.lower()


def mask_phone(phone: str) -> str:
    """+447700900123 -> +44******123: enough to tell numbers apart in logs, not to dial."""
    digits = phone.strip()
    if len(digits) <= 6:
        return "***"
    return digits[:3] + "*" * (len(digits) - 6) + digits[-3:]


def mask_email(email: str) -> str:
    local, _, domain = email.strip().partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


def address_hash(address: str) -> str:
    """The key a suppression is kept under: survives erasure of the patient record."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()
