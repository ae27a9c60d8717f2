"""The quick paths for plainly written mobiles and emails give what the full check gives
(phonenumbers, email_validator), or step aside: checked on random inputs, fixed seeds."""

from __future__ import annotations

import random

import phonenumbers
from email_validator import validate_email

from campaigns.rules import contacts


def _full_phone(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, "GB")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    if phonenumbers.number_type(number) not in contacts._MOBILE_TYPES:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _full_email(text: str) -> str | None:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except Exception:
        return None


def test_a_quick_mobile_is_what_the_full_parse_says() -> None:
    rng = random.Random(3)
    answered = 0
    for _ in range(20_000):
        d = "".join(rng.choice("0123456789") for _ in range(11))
        text = rng.choice(
            ["07" + d[:9], "+447" + d[:9], f"07{d[:3]} {d[3:9]}", "0" + d[:10], "+44 7" + d[:9]]
        )
        quick = contacts._quick_mobile(text, "GB")
        if quick is not None:
            answered += 1
            assert quick == _full_phone(text), text
    assert answered > 5_000


def test_a_quick_email_is_what_email_validator_says() -> None:
    rng = random.Random(5)
    tlds = ["com", "co.uk", "test", "local", "COM", "onion", "nhs.uk", "io", "a1", "xn--p1ai"]
    answered = 0
    for _ in range(20_000):
        local = "".join(rng.choice("abcXYZ09.-_+'!") for _ in range(rng.randint(0, 8)))
        domain = "".join(rng.choice("abZ9-.") for _ in range(rng.randint(0, 8)))
        text = f"{local}@{domain}.{rng.choice(tlds)}"
        quick = contacts._quick_email(text)
        if quick is not None:
            answered += 1
            assert quick == _full_email(text), text
    assert answered > 500
