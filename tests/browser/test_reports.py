"""In a real browser: a viewer opens Reports from the menu and sees its charts, each an image
with a title beside its table; the page is saved as a screenshot for reviewers and the staff
guide (to $CAMPAIGNS_SCREENSHOTS, or the git-ignored build/screenshots/)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from campaigns import rollups
from campaigns.rules.clock import MovableClock
from campaigns.runtime import InlineQueue, tick
from tests.browser.conftest import SCREENSHOTS, screenshot
from tests.browser.test_staff_and_patient_pages import (  # noqa: F401 - the shared fixtures
    LiveServer,
    page,
    sign_in,
)
from tests.integration.helpers import enroll, phone_of
from tests.integration.staff import add_member


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    # A weekday morning: the welcome messages go at once (the send window is open).
    with LiveServer(tmp_path, MovableClock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))) as server:
        yield server


def test_the_report_page_draws_its_charts(
    live: LiveServer,
    page: Page,  # noqa: F811 - the fixture
) -> None:
    services = live.services
    booked = enroll(services, weeks=20)
    stopped = enroll(services, weeks=30)
    tick(services, InlineQueue(services))
    [answer] = live.text_from(phone_of(services, booked.patient_id), "Book pls")
    page.goto(next(word for word in answer.split() if "/b/" in word))  # the link, clicked
    live.text_from(phone_of(services, stopped.patient_id), "STOP")
    timezone = services.settings.default_timezone
    rollups.refresh(services.db, services.clock.now(), timezone)
    rollups.snapshot_stages(services.db, services.clock.now(), timezone)

    add_member(services, "viewer")
    sign_in(page, live, "viewer@clinic.example")
    page.get_by_role("link", name="Reports", exact=True).click()
    expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()
    page.get_by_role("link", name="Last 7 days").click()
    charts = page.locator("svg.chart[role=img]")
    expect(charts).to_have_count(8)
    for n in range(8):
        assert charts.nth(n).locator("title").first.text_content()
    expect(page.locator("svg[aria-labelledby^='chart-days'] rect")).not_to_have_count(0)
    steps = page.get_by_role("region", name="Each campaign step, table")
    expect(steps.get_by_role("row").filter(has_text="welcome")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="Texted STOP")).to_contain_text("1")
    screenshot(page, "reports")
    assert (SCREENSHOTS / "reports.png").stat().st_size > 0
