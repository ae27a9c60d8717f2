"""In a real browser: staff find a bounced email in the message log and retry it; the log and a
message's page are saved as screenshots for reviewers (to $CAMPAIGNS_SCREENSHOTS, or the
git-ignored build/screenshots/)."""

from __future__ import annotations

from playwright.sync_api import Page, expect
from sqlalchemy import update

from campaigns.storage.models import ScheduledMessage
from tests.browser.conftest import SCREENSHOTS, screenshot
from tests.browser.test_staff_and_patient_pages import (  # noqa: F401 - the shared fixtures
    LiveServer,
    live,
    page,
    sign_in,
)
from tests.integration.helpers import enroll, rows
from tests.integration.staff import add_member


def test_a_bounced_email_is_found_in_the_log_and_retried(
    live: LiveServer,  # noqa: F811 - the fixture
    page: Page,  # noqa: F811 - the fixture
) -> None:
    services = live.services
    done = enroll(services, weeks=20, name="Ada Example", email="ada@example.com")
    email = next(r for r in rows(services, done.enrollment_id) if r.channel == "email")
    now = services.clock.now()
    with services.db.session() as session:
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.id == email.id)
            .values(
                status="bounced",
                reason="sendgrid_bounce",
                provider="sendgrid",
                provider_id="sg-bounced-1",
                sent_at=now,
                attempts=1,
            )
        )
    add_member(services, "clinician")
    sign_in(page, live, "clinician@clinic.example")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="Messages", exact=True).click()
    expect(page.get_by_role("heading", name="Messages")).to_be_visible()
    page.get_by_role("checkbox", name="bounced").check()
    page.get_by_role("button", name="Show messages").click()
    row = page.get_by_role("row").filter(has_text="Ada Example")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("bounced")
    screenshot(page, "message-log")
    row.get_by_role("link", name=str(email.id)).click()
    expect(page.get_by_role("heading", name=f"Message {email.id}: Email")).to_be_visible()
    expect(page.get_by_text("the email bounced")).to_be_visible()
    screenshot(page, "message-page")
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("1 message will be sent again.")
    expect(page.locator(".facts")).to_contain_text("pending")
    assert (SCREENSHOTS / "message-log.png").stat().st_size > 0
