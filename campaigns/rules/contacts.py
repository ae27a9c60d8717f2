"""Reading what staff type in: phone numbers, email addresses, timezones, languages.

Pure: every function returns the normalised value or raises InputError naming the field. Logs
and errors show only masked contact details.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from campaigns.rules.errors import InputError
from campaigns.rules.window import WindowError, zone

_MOBILE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}
_SEPARATORS = re.compile(r"[\s\-]")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


@lru_cache(maxsize=8)
def _mobiles(region: str) -> tuple[re.Pattern[str], str, str] | None:
    """The region's mobile numbers (from phonenumbers' own metadata), its country code and
    national prefix: the common case, checked without the full parse (an import of 100,000
    rows spent most of its time there)."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or meta.mobile is None or not meta.national_prefix:
        return None
    pattern = meta.mobile.national_number_pattern
    if pattern is None:
        return None
    return re.compile(pattern), f"+{meta.country_code}", meta.national_prefix


def _quick_mobile(text: str, region: str) -> str | None:
    """E.164 for a plainly written mobile of the region (07400 123456, +44 7400 123456), or
    None to take the full parse. Gives what the full parse gives, or nothing."""
    known = _mobiles(region)
    if known is None:
        return None
    pattern, country, prefix = known
    digits = _SEPARATORS.sub("", text)
    if digits.startswith(country):
        national = digits[len(country) :]
    elif digits.startswith(prefix):
        national = digits[len(prefix) :]
    else:
        return None
    if national.isdigit() and pattern.fullmatch(national):
        return country + national
    return None


def normalise_phone(raw: str, region: str = "GB", *, field: str = "phone") -> str:
    """E.164 for a valid mobile number; a landline cannot receive our texts."""
    text = raw.strip()
    if not text:
        raise InputError(field, "is empty")
    quick = _quick_mobile(text, region)
    if quick is not None:
        return quick
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


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[a-z]{{2,63}})")


def _quick_email(text: str) -> str | None:
    """A plainly written ASCII address, as email_validator would normalise it (the domain in
    lower case), or None to take the full check; an import spent most of its time there."""
    if len(text) > 254:
        return None
    found = _PLAIN_EMAIL.fullmatch(text.lower())
    if found is None or len(found.group(1)) > 64 or "--" in found.group(2):
        return None
    tld = found.group(2).rsplit(".", 1)[1]
    if tld in SPECIAL_USE_DOMAIN_NAMES or found.group(2) in SPECIAL_USE_DOMAIN_NAMES:
        return None
    return text[: len(found.group(1))] + "@" + found.group(2)


def normalise_email(raw: str, *, field: str = "email") -> str:
    text = raw.strip()
    if not text:
        raise InputError(field, "is empty")
    quick = _quick_email(text)
    if quick is not None:
        return quick
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
