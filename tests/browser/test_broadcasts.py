"""In a real browser (Debian's Chromium driven by Playwright): a clinician writes a broadcast,
watches the text's count (the opt-out joins it for an offer), checks who gets it and what they
read, schedules it for the next morning, and finds it on a patient's timeline. Screenshots of
the form, the broadcast's page and the timeline go to $CAMPAIGNS_SCREENSHOTS."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import Browser, expect

from campaigns.rules.clock import MovableClock
from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import LiveServer, sign_in
from tests.integration.helpers import enroll
from tests.integration.staff import add_member


def test_a_clinician_schedules_a_broadcast_and_sees_it_on_a_timeline(
    browser: Browser, tmp_path: Path
) -> None:
    clock = MovableClock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))  # a Monday morning
    with LiveServer(tmp_path, clock) as live:
        services = live.services
        cara = enroll(services, weeks=30, name="Cara Example", channels="sms")
        enroll(services, weeks=22, name="Bea Example", channels="sms")
        add_member(services, "clinician")
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        try:
            sign_in(page, live, "clinician@clinic.example")
            page.get_by_role("link", name="Broadcasts").click()
            page.get_by_role("link", name="Write a broadcast").click()
            page.get_by_label("Name (for staff; never sent)").fill("Closed on Friday")
            box = page.get_by_label("The text message")
            box.fill("The clinic is closed on Friday 6 March. Call 020 7946 0000 to rebook.")
            count = page.locator("#sms-count")
            expect(count).to_contain_text("76 of 160 characters")
            page.get_by_label("An offer", exact=False).check()
            expect(count).to_contain_text("94 of 160 characters")  # and “Reply STOP to end”
            page.get_by_label("A service notice", exact=False).check()
            expect(count).to_contain_text("76 of 160 characters")
            screenshot(page, "broadcast-new")
            page.get_by_role("button", name="Check who gets it").click()

            expect(page.get_by_role("heading", level=1)).to_contain_text("Closed on Friday")
            expect(page.locator("main")).to_contain_text("2 patients")
            expect(page.locator(".bubble")).to_have_text(
                "Santi: The clinic is closed on Friday 6 March. Call 020 7946 0000 to rebook."
            )
            page.get_by_label("Later, on:").check()
            page.get_by_label("Send on").fill("2026-03-03")
            page.get_by_label("At", exact=True).fill("11:00")
            page.get_by_role("button", name="Schedule it").click()
            expect(page.get_by_role("status")).to_contain_text(
                "Scheduled: 2 messages to 2 patients"
            )
            screenshot(page, "broadcast")

            page.goto(f"{live.url}/staff/patients/{cara.patient_id}")
            row = page.get_by_role("row").filter(has_text="Broadcast: Closed on Friday")
            expect(row).to_contain_text("pending")
            expect(row).to_contain_text("The clinic is closed on Friday 6 March.")
            screenshot(page, "broadcast-timeline")
        finally:
            context.close()
