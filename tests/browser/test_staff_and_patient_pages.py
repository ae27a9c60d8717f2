"""In a real browser (Debian's Chromium driven by Playwright): staff sign in (password, an
authenticator code, a security key through Chromium's virtual authenticator) and out; a viewer
is offered no actions and a forged request from the page is refused; staff work an alert from
the dashboard to acknowledgement; a patient's booking and unsubscribe links do what they say."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pyotp
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from campaigns import staff_accounts
from campaigns.bootstrap import Services, build
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.rules.clock import Clock
from campaigns.storage.migrate import upgrade
from campaigns.storage.models import Enrollment
from campaigns.web.app import create_app
from tests.browser.conftest import CHROMIUM, FLAGS  # noqa: F401 - other modules import them here
from tests.conftest import make_settings
from tests.integration.helpers import enroll, phone_of
from tests.integration.processes import free_port
from tests.integration.staff import PASSWORD, add_member

TOKEN = "test_auth_token_0123456789abcdef"


class LiveServer:
    def __init__(self, tmp_path: Path, clock: Clock | None = None) -> None:
        self.port = free_port()
        # localhost, not 127.0.0.1: browsers hold security keys for a domain name only.
        self.url = f"http://localhost:{self.port}"
        database = f"sqlite:///{tmp_path / 'browser.db'}"
        upgrade(database)
        self.services: Services = build(
            make_settings(
                database_url=database,
                public_url=self.url,
                twilio_auth_token=TOKEN,
                booking_url=f"{self.url}/healthz?from=booking",
            ),
            clock=clock,
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


def sign_in(page: Page, live: LiveServer, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{live.url}/staff/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You have signed out.")


def test_staff_sign_in_and_out_and_a_wrong_password_is_told_plainly(
    live: LiveServer, page: Page
) -> None:
    add_member(live.services, "clinician")
    sign_in(page, live, "clinician@clinic.example", "not my password at all")
    expect(page.get_by_role("alert")).to_contain_text("The email address or password is not right.")
    expect(page.get_by_label("Email address")).to_have_value("clinician@clinic.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("link", name="Enrol", exact=True)).to_be_visible()
    sign_out(page)
    page.goto(f"{live.url}/staff/patients")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_sign_in_with_an_authenticator_code(live: LiveServer, page: Page) -> None:
    add_member(live.services, "admin")
    enrolled = staff_accounts.enroll_totp(
        live.services.db,
        live.services.totp_box,
        "admin@clinic.example",
        live.services.clock.now(),
        actor="test",
    )
    sign_in(page, live, "admin@clinic.example")
    expect(page.get_by_role("heading", name="Check it is you")).to_be_visible()
    page.get_by_label(re.compile("6-digit code")).fill("000000")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    page.get_by_label(re.compile("6-digit code")).fill(pyotp.TOTP(enrolled.secret).now())
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_role("link", name="Staff", exact=True)).to_be_visible()


def test_a_security_key_is_added_and_signs_in(live: LiveServer, page: Page) -> None:
    add_member(live.services, "admin")
    session = page.context.new_cdp_session(page)
    session.send("WebAuthn.enable")
    session.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    sign_in(page, live, "admin@clinic.example")
    page.goto(f"{live.url}/staff/security")
    page.get_by_label("Name for a new key").fill("Desk key")
    page.get_by_role("button", name="Add a security key or passkey").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    expect(page.locator("#passkey-code-list li")).to_have_count(10)
    page.get_by_role("link", name="Continue").click()
    expect(page.get_by_role("cell", name="Desk key")).to_be_visible()
    sign_out(page)
    sign_in(page, live, "admin@clinic.example")
    expect(page.get_by_role("heading", name="Check it is you")).to_be_visible()
    page.get_by_role("button", name="Use security key").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    [key] = staff_accounts.list_all(live.services.db)
    assert key.passkeys == 1


def test_a_viewer_sees_no_actions_and_a_forged_request_is_refused(
    live: LiveServer, page: Page
) -> None:
    done = enroll(live.services, weeks=20, name="Dot Example")
    add_member(live.services, "viewer")
    sign_in(page, live, "viewer@clinic.example")
    page.goto(f"{live.url}/staff/patients/{done.patient_id}")
    expect(page.get_by_role("heading", name="Dot Example")).to_be_visible()
    expect(page.get_by_role("button", name="Pause messages")).to_have_count(0)
    expect(page.get_by_role("button", name="Stop everything")).to_have_count(0)
    expect(page.get_by_role("link", name="Enrol", exact=True)).to_have_count(0)
    pause = f"/staff/enrollments/{done.enrollment_id}/pause"
    script = """async ([url, token]) => {
        const body = new URLSearchParams(token ? {csrf_token: token} : {});
        const answer = await fetch(url, {method: "POST", body});
        return answer.status;
    }"""
    assert page.evaluate(script, [pause, ""]) == 403  # no token
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert page.evaluate(script, [pause, token]) == 403  # the token, but not the role
    with live.services.db.session() as session:
        status = session.execute(select(Enrollment.status)).scalar_one()
    assert status == "active"


def test_staff_work_a_red_alert_from_the_dashboard_to_acknowledged(
    live: LiveServer, page: Page
) -> None:
    done = enroll(live.services, weeks=30, name="Cara Example")
    add_member(live.services, "clinician")
    sign_in(page, live, "clinician@clinic.example")
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
    done = enroll(live.services, weeks=20)
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
