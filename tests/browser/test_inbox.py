"""In a real browser (Debian's Chromium driven by Playwright): a clinician opens the inbox,
replies to a patient, watches the character count change as she types, and sees the reply in
the conversation once the normal send path has sent it. Screenshots of the inbox and of the
conversation go to $CAMPAIGNS_SCREENSHOTS (default build/screenshots/) for reviewers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import Browser, expect

from campaigns.bootstrap import Services, build
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.rules.replies import Inbound
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.migrate import upgrade
from campaigns.web.app import create_app
from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import sign_in
from tests.conftest import ALWAYS_OPEN, make_settings
from tests.integration.helpers import enroll, phone_of
from tests.integration.processes import free_port
from tests.integration.staff import add_member


class InboxServer:
    """The staff app on a free port, with a send window always open (the test runs at any
    hour); sending is driven by the test, as beat would."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        database = f"sqlite:///{tmp_path / 'inbox.db'}"
        upgrade(database)
        self.services: Services = build(
            make_settings(
                database_url=database,
                public_url=self.url,
                send_window=ALWAYS_OPEN,
                holiday_region="none",
            ),
            sms=FakeSmsSender(),
            email=FakeEmailSender(),
        )
        config = uvicorn.Config(
            create_app(self.services), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InboxServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.services.close()


def test_a_clinician_replies_from_the_inbox_with_a_live_count(
    browser: Browser, tmp_path: Path
) -> None:
    with InboxServer(tmp_path) as live:
        services = live.services
        done = enroll(services, weeks=24, name="Dana Example", channels="sms", email="")
        phone = phone_of(services, done.patient_id)
        tick(services, InlineQueue(services))  # her welcome text
        now = services.clock.now()
        services.answerer.handle(Inbound("SMbrowser1", phone, "can I still do yoga?"), now)
        services.answerer.handle(Inbound("SMbrowser2", "+447700900777", "wrong number?"), now)
        add_member(services, "clinician")

        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        try:
            sign_in(page, live, "clinician@clinic.example")  # type: ignore[arg-type]
            page.get_by_role("link", name="Inbox").click()
            expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
            row = page.get_by_role("row").filter(has_text="Dana Example")
            expect(row).to_contain_text("Unread")
            expect(row).to_contain_text("can I still do yoga?")
            expect(page.get_by_role("row").filter(has_text="Unknown number")).to_be_visible()
            screenshot(page, "inbox")

            row.get_by_role("link", name="Dana Example").click()
            expect(page.get_by_role("heading", name="Texts with Dana Example")).to_be_visible()
            count = page.locator("#reply-count")
            expect(count).to_contain_text("7 of 160 characters")  # "Santi: " alone
            box = page.get_by_label("Reply", exact=True)
            box.press_sequentially("Yes, gentle yoga is fine.")
            expect(count).to_contain_text("32 of 160 characters")
            box.press_sequentially(" 🧘")
            expect(count).to_contain_text("of 70 characters")
            box.fill("x" * 160)
            expect(count).to_contain_text("7 too many")
            box.fill("Yes, gentle yoga is fine. Stop if anything hurts.")
            expect(count).to_contain_text("56 of 160 characters")
            page.get_by_role("button", name="Send reply").click()
            expect(page.get_by_role("status")).to_contain_text("Reply written")

            assert tick(services, InlineQueue(services)) == 1  # what beat does next
            page.reload()
            reply = page.locator("li.msg-out").filter(has_text="gentle yoga")
            expect(reply).to_contain_text("Staff reply by clinician@clinic.example")
            expect(reply).to_contain_text("sent")
            expect(reply.locator(".bubble")).to_have_text(
                "Santi: Yes, gentle yoga is fine. Stop if anything hurts."
            )
            expect(page.get_by_text("Handled", exact=True)).to_be_visible()
            screenshot(page, "conversation")
        finally:
            context.close()
    sent = services.sms
    assert isinstance(sent, FakeSmsSender)
    assert [m.body for m in sent.sent if m.to == phone][-1] == (
        "Santi: Yes, gentle yoga is fine. Stop if anything hurts."
    )
