"""Staff words on the pages: the enrol form's errors name fields as staff call them ("Due
date", "Time zone", "Mobile number"), never a key (`edd`, `tz`), a command-line flag or a masked
copy of what the member just typed; gestation in weeks and days; one date format."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from campaigns.bootstrap import Services
from campaigns.rules.pregnancy import GestationalAge
from campaigns.rules.wording import day, label, moment, step_name, weeks_and_days
from campaigns.web.app import create_app
from tests.integration.staff import sign_in

FORM = {
    "name": "Ada Example",
    "phone": "07123",
    "email": "ada@",
    "edd": "2099-01-01",
    "edd_source": "scan",
    "tz": "Europe/Lndon",
    "language": "en",
    "channels": "sms",
}


def _problem(page: str) -> str:
    """The first problem in the page's error summary, as the member reads it."""
    found = re.search(r'<ul class="error-summary-list">\s*<li>(.*?)</li>', page, flags=re.S)
    assert found, page
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def test_the_enrol_forms_errors_are_in_staff_words(services: Services) -> None:
    with TestClient(create_app(services)) as client:
        member = sign_in(client, services, "clinician")
        answers = [
            member.post("/staff/enrol", data=FORM),
            member.post("/staff/enrol", data={**FORM, "phone": "07400 123456", "tz": ""}),
            member.post(
                "/staff/enrol",
                data={**FORM, "phone": "07400 123456", "email": "", "tz": "", "edd": ""},
            ),
            member.post(
                "/staff/enrol",
                data={
                    **FORM,
                    "phone": "07400 123456",
                    "email": "",
                    "tz": "",
                    "edd": "2027-01-01",
                },
            ),
        ]
    shown = [_problem(a.text) for a in answers]
    assert all(a.status_code == 400 for a in answers)
    assert shown[0] == "Mobile number: 07123 is not a valid phone number"
    assert shown[1].startswith("Email address: ada@ is not a valid email")
    assert shown[2] == "Due date: is required"
    assert shown[3].startswith("What the patient agreed to: the patient must agree")
    for text in shown:
        assert "edd" not in text and "tz" not in text and "--" not in text, text
        assert "***" not in text and "*" not in text, text


def test_field_labels_gestation_and_dates_in_one_format() -> None:
    assert [label(k) for k in ("edd", "tz", "phone", "edd_source", "consent")] == [
        "Due date",
        "Time zone",
        "Mobile number",
        "Where the due date comes from",
        "Consent",
    ]
    assert label("some_new_field") == "Some new field"
    assert weeks_and_days(GestationalAge(14 * 7 + 5)) == "14 weeks 5 days"
    instant = datetime(2026, 12, 6, 14, 5, tzinfo=UTC)
    assert day(instant.date()) == "6 Dec 2026"
    assert moment(instant, "Europe/London", clinic="Europe/London") == "6 Dec 2026, 14:05"
    assert moment(instant, "Europe/Warsaw", clinic="Europe/London") == "6 Dec 2026, 15:05 CET"
    # A message's step: a broadcast or staff reply by what it is, not its internal key.
    assert [step_name(k) for k in ("clot-warning-signs", "broadcast:12", "staff_reply:9")] == [
        "clot-warning-signs",
        "Broadcast 12",
        "Staff reply",
    ]
