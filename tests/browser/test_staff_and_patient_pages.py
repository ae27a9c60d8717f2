"""In a real browser (Debian's Chromium driven by Playwright): staff work an alert from the
dashboard to acknowledgement; a patient's booking and unsubscribe links do what they say."""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright
from twilio.request_validator import RequestValidator

from campaigns.bootstrap import Services, build
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.storage.migrate import upgrade
from campaigns.web.app import create_app
from tests.conftest import make_settings
from tests.integration.helpers import enrol, phone_of
from tests.integration.processes import free_port

TOKEN = "test_auth_token_0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")
# The closed network refuses Chromium's background connections; keep it from trying.
FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class LiveServer:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        database = f"sqlite:///{tmp_path / 'browser.db'}"
        upgrade(database)
        self.services: Services = build(
            make_settings(
                database_url=database,
                public_url=self.url,
                twilio_auth_token=TOKEN,
                booking_url=f"{self.url}/healthz?from=booking",
            ),
            sms=FakeSmsSender(),
            email=FakeEmailSender(),
        )
        config = uvicorn.Config(
            create_app(self.services), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
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

    def text_from(self, sender: str, body: str) -> list[str]:
        params = {
            "MessageSid": f"SM{time.time_ns():032d}",
            "AccountSid": "AC" + "a" * 32,
            "From": sender,
            "To": "+447700900000",
            "Body": body,
        }
        url = f"{self.url}/webhooks/twilio/sms"
        signature = RequestValidator(TOKEN).compute_signature(url, params)
        response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == 200, response.text
        return [part.split("</Message>")[0] for part in response.text.split("<Message>")[1:]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `make test` installs it (scripts/ensure-chromium)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    yield opened
    context.close()


def test_staff_work_a_red_alert_from_the_dashboard_to_acknowledged(
    live: LiveServer, page: Page
) -> None:
    done = enrol(live.services, weeks=30, name="Cara Example")
    phone = phone_of(live.services, done.patient_id)
    [answer] = live.text_from(phone, "I'm bleeding quite a lot")
    assert "maternity unit" in answer

    page.goto(f"{live.url}/staff/")
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("1 safety alert waiting")
    banner.get_by_role("link").click()
    expect(page).to_have_url(f"{live.url}/staff/alerts")
    row = page.get_by_role("row").filter(has_text="Cara Example")
    expect(row).to_contain_text("RED")
    row.get_by_role("link", name="maternity").click()
    expect(page.locator("blockquote.inbound")).to_have_text("I'm bleeding quite a lot")
    expect(page.locator("p.reply")).to_contain_text("maternity unit")
    page.get_by_label("Note (optional)").fill("called her, on her way to triage")
    page.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_contain_text("acknowledged")
    expect(page.get_by_text("Nothing is waiting.")).to_be_visible()

    page.goto(f"{live.url}/staff/patients/{done.patient_id}")
    expect(page).to_have_title("Cara Example · Santi staff")
    expect(page.get_by_text("I'm bleeding quite a lot")).to_be_visible()
    expect(page.get_by_role("heading", name="Consent ledger")).to_be_visible()


def test_a_patient_books_and_unsubscribes_through_their_links(live: LiveServer, page: Page) -> None:
    done = enrol(live.services, weeks=20)
    phone = phone_of(live.services, done.patient_id)
    [answer] = live.text_from(phone, "Book pls")
    link = next(word for word in answer.split() if "/b/" in word)
    page.goto(link)
    landed = urllib.parse.urlsplit(page.url)
    assert landed.path == "/healthz"
    assert dict(urllib.parse.parse_qsl(landed.query))["utm_medium"] == "sms"

    page.goto(live.services.links.unsubscribe_url(done.patient_id, 1))
    expect(page.get_by_role("heading")).to_have_text("Stop our emails?")
    page.get_by_role("button", name="Yes, stop my emails").click()
    expect(page.get_by_role("heading")).to_have_text("You will get no more emails from us")

    page.goto(f"{live.url}/b/not-a-real-token")
    expect(page.get_by_role("heading")).to_have_text("This link does not work")
    expect(page.get_by_role("link", name="020 7946 0000")).to_be_visible()
