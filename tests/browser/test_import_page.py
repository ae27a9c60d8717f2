"""In a real browser: a clinician uploads a CSV file with two bad rows, sees each listed by
line and field while the page follows the check's progress, and imports the good ones. A
screenshot of the preview is saved for reviewers (CAMPAIGNS_SCREENSHOTS, or build/screenshots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import LiveServer, sign_in
from tests.integration.helpers import edd_at
from tests.integration.staff import add_member


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def test_a_csv_with_two_bad_rows_lists_them_by_line_and_imports_the_rest(
    tmp_path: Path, page: Page
) -> None:
    with LiveServer(tmp_path) as live:
        add_member(live.services, "clinician")
        due = edd_at(live.services.clock.now().date(), 20).isoformat()
        header = "Full name,Mobile number,Due date,Where the due date comes from,Consent\n"
        rows = [
            f"Amy Example,07400 900001,{due},scan,programme",
            f"Bea Example,07123,{due},scan,programme",
            f"Cat Example,07400 900003,{due},scan,programme",
            "Dee Example,07400 900004,soon,scan,programme",
        ]
        csv = tmp_path / "patients.csv"
        csv.write_text(header + "\n".join(rows) + "\n")
        sign_in(page, live, "clinician@clinic.example")
        page.get_by_role("link", name="Import", exact=True).click()
        page.get_by_label("CSV file").set_input_files(str(csv))
        page.get_by_role("button", name="Upload and check").click()
        problems = page.locator("ul.problems li")
        expect(problems).to_have_count(2)
        expect(problems.nth(0)).to_have_text(
            "line 3, Mobile number: 07123 is not a valid phone number"
        )
        expect(problems.nth(1)).to_have_text(
            "line 5, Due date: 'soon' is not a date like 2027-05-14"
        )
        screenshot(page, "import-preview")
        page.get_by_role("button", name="Import 2 patients").click()
        expect(page.get_by_role("status")).to_contain_text("Imported 2 patients")
