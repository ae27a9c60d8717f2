"""Reading an enrolment request: every problem of a request is reported at once (a form lists
them all), each naming its field, and the first one still reads as before for the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaigns.rules.catalog import Catalog
from campaigns.rules.errors import InputError, InputErrors, by_field
from campaigns.rules.intake import IntakeRules, parse_enrollment
from campaigns.settings import Settings

RULES = IntakeRules(Catalog.load(Settings().templates_dir), "GB", "Europe/London")
NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
GOOD = {
    "name": "Ada Example",
    "phone": "07400 000123",
    "email": "ada@example.com",
    "edd": "2026-08-01",
    "edd_source": "scan",
    "tz": "Europe/London",
    "channels": "sms,email",
    "consent": "programme",
}


def test_a_good_request_is_read() -> None:
    request = parse_enrollment(GOOD, RULES, NOW)
    assert request.name == "Ada Example" and request.phone == "+447400000123"


def test_every_problem_is_reported_in_the_order_of_the_form() -> None:
    bad = {**GOOD, "name": "", "phone": "", "edd": "next spring", "tz": "Mars/Base", "consent": ""}
    with pytest.raises(InputErrors) as caught:
        parse_enrollment(bad, RULES, NOW, row=4)
    found = by_field(caught.value)
    assert list(found) == ["name", "phone", "edd", "tz", "consent"]
    assert found["name"] == "is required"
    assert "text message" in found["phone"]
    assert "Mars/Base" in found["tz"]
    assert "next spring" in found["edd"]
    assert "must agree" in found["consent"]
    # The first problem, as a single InputError for callers that show one (CLI, CSV rows).
    assert isinstance(caught.value, InputError)
    assert str(caught.value) == "row 4: name: is required"
    assert all(p.row == 4 for p in caught.value.problems)


def test_a_bad_number_is_one_problem_not_two() -> None:
    with pytest.raises(InputErrors) as caught:
        parse_enrollment({**GOOD, "phone": "07123"}, RULES, NOW)
    assert list(by_field(caught.value)) == ["phone"]
    assert len(caught.value.problems) == 1


def test_one_problem_reads_as_it_always_did() -> None:
    with pytest.raises(InputError, match="^email: is needed to send tips by email$"):
        parse_enrollment({**GOOD, "email": ""}, RULES, NOW)
    assert by_field(InputError("edd", "is required")) == {"edd": "is required"}


def test_a_campaign_is_named_by_its_key_or_its_name_in_any_case() -> None:
    for given in ("leg-cramps", "Leg care in pregnancy", "LEG CARE IN PREGNANCY", ""):
        assert parse_enrollment({**GOOD, "campaign": given}, RULES, NOW).campaign == "leg-cramps"
    with pytest.raises(InputError, match=r"known: Leg care in pregnancy \(leg-cramps\)"):
        parse_enrollment({**GOOD, "campaign": "Back care"}, RULES, NOW)
