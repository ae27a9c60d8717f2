"""In a real browser (Debian's Chromium driven by Playwright): staff edit a patient's mobile
number from her page and see it saved; the patient page and the patient list are saved as
screenshots for a reviewer (to $CAMPAIGNS_SCREENSHOTS, or build/screenshots/)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from campaigns import alerts
from campaigns.rules.replies import AlertSpec, Severity
from campaigns.storage.models import Patient
from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import LiveServer, sign_in
from tests.integration.helpers import enroll
from tests.integration.staff import add_member


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def test_staff_edit_a_patients_mobile_number_and_see_it_saved(
    tmp_path: Path, browser: Browser, page: Page
) -> None:
    with LiveServer(tmp_path) as live:
        done = enroll(live.services, weeks=24, name="Gail Example", clinic_ref="SC-2040")
        for weeks, name in ((9, "Hana Example"), (31, "Iris Example")):
            enroll(live.services, weeks=weeks, name=name)
        with live.services.db.session() as session:
            alerts.raise_alert(
                session,
                AlertSpec(Severity.AMBER, "calf_pain"),
                live.services.clock.now(),
                patient_id=done.patient_id,
                inbound_id=None,
                matched=["calf"],
            )
        add_member(live.services, "clinician")
        sign_in(page, live, "clinician@clinic.example")

        page.goto(f"{live.url}/staff/patients/{done.patient_id}")
        expect(page.get_by_role("heading", name="Open alerts (1)")).to_be_visible()
        page.get_by_role("link", name="Edit details").click()
        number = page.get_by_label("Mobile number")
        number.fill("07400 555 321")
        page.get_by_role("button", name="Save details").click()
        expect(page).to_have_url(f"{live.url}/staff/patients/{done.patient_id}")
        expect(page.get_by_role("status")).to_contain_text("Saved: mobile number.")
        expect(page.locator("dl.facts")).to_contain_text("+447400555321")
        with live.services.db.session() as session:
            saved = session.get(Patient, done.patient_id)
            assert saved is not None and saved.phone == "+447400555321"
        screenshot(page, "patient")

        page.get_by_role("link", name="Patients", exact=True).click()
        expect(page.get_by_role("link", name="Gail Example")).to_be_visible()
        screenshot(page, "patient-list")
        page.get_by_label("Has an open alert").check()
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_role("link", name="Gail Example")).to_be_visible()
        expect(page.get_by_role("link", name="Hana Example")).to_have_count(0)
