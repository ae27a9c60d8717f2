"""In a real browser (Debian's Chromium driven by Playwright): a clinician edits a step's text
in a draft and watches the count turn red, with words, past 160 characters; a second
clinician reviews the draft's changes and approves it, and the new text is live on the
campaign page. Screenshots of the editor and the sign-off go to $CAMPAIGNS_SCREENSHOTS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from campaigns import content_editing
from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import LiveServer, sign_in
from tests.integration.staff import add_member

PAGE = "/staff/campaigns/leg-cramps"
STOP = " Reply STOP to end"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as server:
        add_member(server.services, "clinician", "author@clinic.example")
        add_member(server.services, "clinician", "reviewer@clinic.example")
        yield server


def signed_in(browser: Browser, live: LiveServer, email: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(page, live, email)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    return page


def test_edit_a_text_see_it_go_red_past_160_then_another_clinician_approves(
    browser: Browser, live: LiveServer
) -> None:
    author = signed_in(browser, live, "author@clinic.example")
    author.get_by_role("link", name="Campaigns").click()
    author.get_by_role("link", name="Leg care in pregnancy").click()
    author.get_by_role("button", name="Edit as a draft").click()
    expect(
        author.get_by_role("heading", name="Draft version 2 of Leg care in pregnancy")
    ).to_be_visible()
    author.get_by_role("link", name="welcome (edit)").click()

    text = author.get_by_role("textbox", name="Text message")
    usual = author.locator('#sms-count [data-wording="usual"]')
    expect(usual).to_contain_text("of 160 characters, 1 text")
    expect(usual).not_to_have_class("sms-count over")
    # "Santi: " (7) + words + " Reply STOP to end" (18) = 161: one too many for one text.
    text.fill("{{ clinic.short_name }}: " + "a" * 136 + STOP)
    expect(usual).to_have_text(
        "Usual wording: 161 of 160 characters, 2 texts: too long for one text"
    )
    expect(usual).to_have_class("sms-count over")
    assert usual.evaluate("el => getComputedStyle(el).color") == "rgb(179, 38, 30)"  # red
    expect(author.locator("#sms-problems")).to_contain_text("Shorten it by 1")
    screenshot(author, "campaign-step-too-long")

    new_text = (
        "{{ clinic.short_name }}: welcome! Short leg-care tips come about once a week." + STOP
    )
    text.fill(new_text)
    expect(usual).to_have_text("Usual wording: 77 of 160 characters, 1 text")
    expect(usual).not_to_have_class("sms-count over")
    expect(author.locator("#sms-problems li")).to_have_count(0)
    author.get_by_role("button", name="Save to the draft").click()
    expect(author.get_by_role("status")).to_have_text(
        "Saved. The checks found no problem in this step."
    )
    # Its author cannot sign it off, and is told why.
    author.goto(f"{live.url}{PAGE}/draft/approve")
    expect(author.locator("#cannot-approve")).to_contain_text("a different clinician must approve")
    expect(author.get_by_role("button", name="Approve version 2")).to_have_count(0)

    reviewer = signed_in(browser, live, "reviewer@clinic.example")
    reviewer.goto(f"{live.url}{PAGE}")
    reviewer.get_by_role("link", name="Review for sign-off").click()
    expect(reviewer.get_by_role("heading", name="Step “welcome” changed")).to_be_visible()
    expect(reviewer.locator("pre.after")).to_contain_text("Short leg-care tips come about once")
    reviewer.get_by_label("Note (optional)").fill("Checked with the physio team.")
    screenshot(reviewer, "campaign-approve")
    reviewer.get_by_role("button", name="Approve version 2").click()
    expect(reviewer.get_by_role("status")).to_contain_text("version 2 is live")
    expect(reviewer.locator("main")).to_contain_text(
        "Santi: welcome! Short leg-care tips come about once a week. Reply STOP to end"
    )
    expect(reviewer.locator("main")).to_contain_text("Checked with the physio team.")
    found = content_editing.live_of(live.services.db, "leg-cramps")
    assert found is not None
    assert (found[0].approved_by or "").endswith(":reviewer@clinic.example")
    reviewer.context.close()
    author.context.close()
