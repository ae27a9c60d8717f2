"""Accessibility (WCAG 2.2 AA, as NHS and GOV.UK services must be), in Debian's Chromium.

axe-core (npm, package.json) is injected into every staff page (each GET route of the app,
found from the app itself, opened with real ids from seeded data, so a page added later is
checked without a change here), every patient-facing page (links, error pages, sign-in) and
every email template in light and dark mode; any violation of the WCAG 2.x A/AA rules fails.
What axe cannot see is checked by hand: a failed form lists every problem at the top, focused,
each linked to its field, with the message by the field or inside the tick-box group; a thick
focus outline; no sideways scrolling at 320 px wide (400 % zoom).

Screenshots of the main pages go to $CAMPAIGNS_SCREENSHOTS (default build/screenshots/), for a
reviewer and for docs/staff-guide.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select

from campaigns import broadcasts, content_versions, importing, rollups, staff_accounts
from campaigns.bootstrap import Services
from campaigns.providers.local import LocalEmailSender, LocalSmsSender
from campaigns.rules import broadcasts as broadcast_rules
from campaigns.rules.clock import MovableClock
from campaigns.rules.content import Recipient
from campaigns.rules.vocabulary import Channel
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.models import Alert, Conversation
from campaigns.web.app import create_app
from tests.browser.conftest import screenshot
from tests.browser.test_staff_and_patient_pages import LiveServer
from tests.integration.helpers import enroll, phone_of, rows
from tests.integration.staff import PASSWORD, add_member

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
#: WCAG 2.0, 2.1 and 2.2 at levels A and AA.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
#: 400 % zoom of a 1280 px wide window.
NARROW = 320

#: Staff pages reached through other steps than a plain GET by a signed-in admin (tested below).
OWN_TESTS = {"/staff/login", "/staff/login/code"}

RUN_AXE = """async (tags) => {
    const found = await axe.run(document, {
        runOnly: {type: "tag", values: tags},
        resultTypes: ["violations"],
        iframes: false,
    });
    return found.violations.map(v => ({
        rule: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " -> " + n.failureSummary),
    }));
}"""


@dataclass
class Seeded:
    """Real ids for the path parameters of staff routes."""

    patient_id: int
    sms_id: int
    params: dict[str, str]
    #: Other states of the same pages: a loss alert, a text message, a search, every alert.
    more: list[str]


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Every WCAG A/AA violation axe-core finds on the page as it is now."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = page.evaluate(RUN_AXE, WCAG_TAGS)
    return found


def assert_accessible(page: Page, what: str) -> None:
    found = axe_violations(page)
    assert not found, f"{what}: axe-core found WCAG violations:\n" + "\n".join(
        f"- {v['rule']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"])
        for v in found
    )


# -- fixtures: one browser, one seeded server, one signed-in admin for the module ---------------


@pytest.fixture(scope="module")
def browser(browser: Browser) -> Browser:
    """The shared browser, once axe-core is there to inject."""
    if not AXE.exists():
        pytest.fail("axe-core is missing: `make test` installs it (npm ci, package.json)")
    return browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # A weekday morning: the welcome messages go at once (the send window is open).
    clock = MovableClock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    with LiveServer(tmp_path_factory.mktemp("a11y"), clock) as server:
        yield server


@pytest.fixture(scope="module")
def seeded(live: LiveServer) -> Seeded:
    """A patient with sent messages (a text and an email) and a RED alert; staff of each role."""
    services = live.services
    # The local providers keep what they send: the outbox pages list it.
    services.sms, services.email = LocalSmsSender(), LocalEmailSender()
    done = enroll(services, weeks=30, name="Cara Example")
    other = enroll(services, weeks=14, name="Bea Example", channels="sms")
    tick(services, InlineQueue(services))
    sent = {r.channel: r.id for r in rows(services, done.enrollment_id) if r.sent_at is not None}
    assert set(sent) == {Channel.SMS.value, Channel.EMAIL.value}, sent
    live.text_from(phone_of(services, done.patient_id), "I'm bleeding quite a lot")
    live.text_from(phone_of(services, other.patient_id), "we lost the baby yesterday")
    for role in ("admin", "viewer"):
        add_member(services, role)
    with services.db.session() as session:
        alert_id, loss_alert_id = session.execute(select(Alert.id).order_by(Alert.id)).scalars()
        conversation_id = (
            session.execute(select(Conversation.id).order_by(Conversation.id)).scalars().first()
        )
    assert conversation_id is not None
    # An uploaded CSV, checked: its preview and progress pages.
    csv = b"name,phone,edd,edd_source,consents\nDee Example,07123,2026-09-01,scan,programme\n"
    import_id = importing.upload(services.db, csv, "patients.csv", services.clock.now(), actor="t")
    importing.run_check(services.db, services.intake, services.clock, import_id)
    # A campaign draft: its pages (the draft, a step's editor, the sign-off) show it.
    content_versions.open_draft(services.db, "leg-cramps", "t", services.clock.now())
    # The reports' counts, as the periodic jobs make them: the report page has its charts.
    rollups.refresh(services.db, services.clock.now(), services.settings.default_timezone)
    rollups.snapshot_stages(services.db, services.clock.now(), services.settings.default_timezone)
    draft_id, scheduled_id = _broadcasts(services)
    return Seeded(
        patient_id=done.patient_id,
        sms_id=sent[Channel.SMS.value],
        params={
            "patient_id": str(done.patient_id),
            "alert_id": str(alert_id),
            "message_id": str(sent[Channel.EMAIL.value]),
            "status": "failed",
            "conversation_id": str(conversation_id),
            "import_id": str(import_id),
            "key": "leg-cramps",
            "step": "clot-warning-signs",
            "broadcast_id": str(draft_id),
        },
        more=[
            f"/staff/alerts/{loss_alert_id}",
            f"/staff/outbox/{sent[Channel.SMS.value]}",
            f"/staff/patients/{other.patient_id}",
            "/staff/patients?q=Example",
            "/staff/alerts?show=all",
            "/staff/campaigns/leg-cramps/email?step=welcome&discreet=yes",
            f"/staff/broadcasts/{scheduled_id}",
            f"/staff/messages?broadcast={scheduled_id}",
        ],
    )


BROADCAST_SUBJECT = "The clinic is closed on Friday"
BROADCAST_BODY = "We are closed on Friday.\n\nCall us on Monday to rebook."
BROADCAST_FORM: dict[str, Any] = {
    "purpose": "service",
    "status": ["active"],
    "channels": ["sms", "email"],
    "sms": "The clinic is closed on Friday.",
    "subject": BROADCAST_SUBJECT,
    "body": BROADCAST_BODY,
}


def _broadcasts(services: Services) -> tuple[int, int]:
    """A draft broadcast (its page offers the send time) and a scheduled one (its counts)."""
    sending = broadcasts.Sending(services.window, "Europe/London", 100)
    made = []
    for name in ("Closed on Friday", "Evening physio"):
        draft = broadcast_rules.read_form(
            {**BROADCAST_FORM, "name": name}, campaigns=["leg-cramps"], clinic_short_name="Santi"
        )
        made.append(broadcasts.create(services.db, draft, services.clock.now(), actor="t"))
    broadcasts.schedule(services.db, sending, made[1], None, services.clock.now(), actor="t")
    return made[0], made[1]


def _signed_in(browser: Browser, live: LiveServer, email: str, **options: Any) -> BrowserContext:
    context = browser.new_context(**options)
    page = context.new_page()
    page.goto(f"{live.url}/staff/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.close()
    return context


@pytest.fixture(scope="module")
def admin(browser: Browser, live: LiveServer, seeded: Seeded) -> Iterator[BrowserContext]:
    # The email frame's own policy (a sandbox, no scripts) would keep axe out of it.
    context = _signed_in(
        browser,
        live,
        "admin@clinic.example",
        viewport={"width": 1280, "height": 900},
        bypass_csp=True,
    )
    yield context
    context.close()


@pytest.fixture(scope="module")
def narrow(browser: Browser, live: LiveServer, seeded: Seeded) -> Iterator[BrowserContext]:
    context = _signed_in(
        browser, live, "admin@clinic.example", viewport={"width": NARROW, "height": 640}
    )
    yield context
    context.close()


@pytest.fixture
def page(admin: BrowserContext) -> Iterator[Page]:
    opened = admin.new_page()
    yield opened
    opened.close()


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


# -- every staff page -------------------------------------------------------------------------


def staff_get_routes() -> list[str]:
    """Every GET route under /staff of the app, with its path parameters as written."""
    from campaigns.bootstrap import build
    from tests.conftest import make_settings

    built = build(make_settings())
    try:
        found: set[str] = set()
        for route in create_app(built).routes:
            contexts = (
                [c.original_route for c in route.effective_route_contexts()]
                if hasattr(route, "effective_route_contexts")
                else [route]
            )
            for each in contexts:
                if (
                    isinstance(each, APIRoute)
                    and each.path.startswith("/staff")
                    and "GET" in (each.methods or set())
                    and not _answers_json(each)
                    and not each.path.endswith(".csv")  # a download, not a page
                ):
                    found.add(each.path)
        return sorted(found)
    finally:
        built.close()


def _answers_json(route: APIRoute) -> bool:
    """A data endpoint a page polls (e.g. an import's progress) or a file to download (a
    campaign's zip), not a page to check."""
    import inspect

    from fastapi.responses import JSONResponse

    from campaigns.web.campaign_pages import ZipDownload

    answer = inspect.signature(route.endpoint, eval_str=True).return_annotation
    return inspect.isclass(answer) and issubclass(answer, JSONResponse | ZipDownload)


STAFF_PAGES = staff_get_routes()

#: The main pages, photographed for the staff guide (docs/staff-guide.md).
PICTURED = {
    "/staff/": "dashboard",
    "/staff/patients/{patient_id}": "patient",
    "/staff/alerts": "alerts",
    "/staff/alerts/{alert_id}": "alert",
    "/staff/enrol": "enrol",
    "/staff/outbox/{message_id}": "message",
    "/staff/campaigns": "campaigns",
    "/staff/campaigns/{key}": "campaign",
    "/staff/campaigns/{key}/draft": "campaign-draft",
    "/staff/reports": "reports",
}


def test_the_walk_finds_the_staff_pages() -> None:
    assert {"/staff/", "/staff/patients/{patient_id}", "/staff/enrol"} <= set(STAFF_PAGES)
    assert set(STAFF_PAGES) >= OWN_TESTS


def _fill(path: str, seeded: Seeded) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in seeded.params, (
            f"{path}: add a real {name} to the seeded data of tests/browser/test_accessibility.py"
        )
        return seeded.params[name]

    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", value, path)


@pytest.mark.parametrize("route", [p for p in STAFF_PAGES if p not in OWN_TESTS])
def test_every_staff_page_has_no_wcag_violation(
    page: Page, live: LiveServer, seeded: Seeded, route: str
) -> None:
    answer = page.goto(live.url + _fill(route, seeded))
    assert answer is not None and answer.ok, f"{route}: {answer.status if answer else 'no answer'}"
    assert_accessible(page, route)
    if route in PICTURED:
        screenshot(page, PICTURED[route])


def test_other_states_of_staff_pages_have_no_violation(
    page: Page, live: LiveServer, seeded: Seeded
) -> None:
    for path in seeded.more:
        answer = page.goto(live.url + path)
        assert answer is not None and answer.ok, path
        assert_accessible(page, path)


def test_the_preview_with_messages_has_no_violation(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/staff/preview")
    page.get_by_label(re.compile("due date", re.IGNORECASE)).first.fill("2027-06-01")
    page.get_by_role("button", name=re.compile("preview", re.IGNORECASE)).first.click()
    expect(page.locator("main")).to_contain_text("cramps-what-to-expect")
    assert_accessible(page, "preview with messages")
    screenshot(page, "preview")


def test_a_refused_page_has_no_violation(
    browser: Browser, live: LiveServer, seeded: Seeded
) -> None:
    context = _signed_in(browser, live, "viewer@clinic.example")
    try:
        page = context.new_page()
        answer = page.goto(f"{live.url}/staff/enrol")
        assert answer is not None and answer.status == 403
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
        assert_accessible(page, "403 page")
    finally:
        context.close()


# -- sign-in and patient pages ----------------------------------------------------------------


def test_sign_in_pages_have_no_violation(anonymous: Page, live: LiveServer, seeded: Seeded) -> None:
    page = anonymous
    page.goto(f"{live.url}/staff/login")
    assert_accessible(page, "sign-in")
    page.get_by_label("Email address").fill("admin@clinic.example")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not right")
    assert_accessible(page, "sign-in, wrong password")

    address = add_member(live.services, "clinician", "second@clinic.example")
    staff_accounts.enroll_totp(
        live.services.db, live.services.totp_box, address, live.services.clock.now(), actor="t"
    )
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Email address").fill(address)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Check it is you")).to_be_visible()
    assert_accessible(page, "second step")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert").first).to_be_visible()
    assert_accessible(page, "second step, wrong code")


def test_patient_pages_have_no_violation(anonymous: Page, live: LiveServer, seeded: Seeded) -> None:
    page = anonymous
    page.goto(live.services.links.unsubscribe_url(seeded.patient_id, 1))
    expect(page.get_by_role("heading")).to_have_text("Stop our emails?")
    assert_accessible(page, "unsubscribe")
    page.get_by_role("button", name="Yes, stop my emails").click()
    expect(page.get_by_role("heading")).to_have_text("You will get no more emails from us")
    assert_accessible(page, "unsubscribed")
    for broken in ("/b/not-a-real-token", "/u/not-a-real-token"):
        page.goto(live.url + broken)
        expect(page.get_by_role("heading")).to_have_text("This link does not work")
        assert_accessible(page, broken)


# -- every email, light and dark --------------------------------------------------------------


def _emails(live: LiveServer) -> list[tuple[str, str]]:
    services = live.services
    found = []
    for campaign in services.catalog.values():
        for step in campaign.steps:
            if Channel.EMAIL not in step.channels:
                continue
            for discreet in (False, True):
                rendered = services.renderer.render_email(
                    campaign.key,
                    step.key,
                    Recipient("Zephyrine", "en", discreet),
                    "https://santi.example/u/unsubscribe-token",
                )
                found.append(
                    (f"{campaign.key}/{step.key}{' discreet' if discreet else ''}", rendered.html)
                )
    broadcast = services.renderer.render_broadcast_email(
        BROADCAST_SUBJECT,
        broadcast_rules.paragraphs_of(BROADCAST_BODY),
        Recipient("Zephyrine", "en"),
        "https://santi.example/u/unsubscribe-token",
    )
    found.append(("a broadcast", broadcast.html))
    return found


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_email_has_no_violation_in_light_and_dark_mode(
    browser: Browser, live: LiveServer, scheme: str
) -> None:
    context = browser.new_context(color_scheme=scheme)  # type: ignore[arg-type]
    try:
        page = context.new_page()
        emails = _emails(live)
        assert len(emails) >= 10
        problems = []
        for name, html in emails:
            page.set_content(html)
            found = axe_violations(page)
            problems += [f"{name} ({scheme}): {v['rule']}: {v['nodes']}" for v in found]
        assert not problems, "\n".join(problems)
    finally:
        context.close()


# -- what axe cannot see ----------------------------------------------------------------------


def test_a_failed_enrolment_lists_every_problem_each_linked_to_its_field(
    page: Page, live: LiveServer
) -> None:
    page.goto(f"{live.url}/staff/enrol")
    page.get_by_label("Email address").fill("cara@example.com")
    page.get_by_role("button", name="Enrol and plan messages").click()

    summary = page.get_by_role("alert")
    expect(summary).to_be_focused()  # the cursor is on the problems, not at the top
    expect(summary.get_by_role("heading", name="There is a problem")).to_be_visible()
    links = summary.get_by_role("link")
    targets = [links.nth(i).get_attribute("href") for i in range(links.count())]
    # No name, a text message but no mobile number, no due date, no consent: all four at once.
    assert targets == ["#name", "#phone", "#edd", "#consent"], targets
    for target in targets:
        assert target is not None
        expect(page.locator(target)).to_have_count(1)
    screenshot(page, "enrol-errors")

    # Each message is next to its field, or inside its tick-box group, and read out with it.
    expect(page.get_by_label("Full name")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Full name")).to_have_accessible_description(
        re.compile("Error: is required")
    )
    consent = page.get_by_role("group", name="What the patient agreed to")
    expect(consent).to_contain_text("Error: the patient must agree")
    expect(consent).to_have_accessible_description(re.compile("Error: .*must agree"))
    expect(page.locator("fieldset.invalid")).to_have_count(1)
    expect(page.get_by_label("Email address")).to_have_value("cara@example.com")

    # A link in the summary takes the cursor to its field (the first box of a group).
    summary.get_by_role("link", name=re.compile("^What the patient agreed to")).click()
    expect(page.locator("#consent")).to_be_focused()
    summary.get_by_role("link", name=re.compile("^Full name")).click()
    expect(page.get_by_label("Full name")).to_be_focused()


def test_a_password_change_lists_its_problem_linked_to_the_field(
    page: Page, live: LiveServer
) -> None:
    page.goto(f"{live.url}/staff/password")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("a brand new passphrase 42")
    page.get_by_label("New password again").fill("a different one")
    page.get_by_role("button", name="Change password").click()
    summary = page.get_by_role("alert")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_attribute("href", "#confirm_password")
    expect(page.get_by_label("New password again")).to_have_accessible_description(
        re.compile("not the same")
    )
    assert_accessible(page, "password change with a problem")


def test_a_wrong_password_is_summarised_and_focused(
    anonymous: Page, live: LiveServer, seeded: Seeded
) -> None:
    anonymous.goto(f"{live.url}/staff/login")
    anonymous.get_by_label("Email address").fill("admin@clinic.example")
    anonymous.get_by_label("Password").fill("not it")
    anonymous.get_by_role("button", name="Sign in").click()
    summary = anonymous.get_by_role("alert")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("link")).to_have_attribute("href", "#email")


FOCUS_STYLE = """el => {
    const style = getComputedStyle(el);
    return [style.outlineStyle, style.outlineWidth, style.outlineColor, style.boxShadow];
}"""


def test_the_focus_outline_is_thick_yellow_and_black(page: Page, live: LiveServer) -> None:
    page.goto(f"{live.url}/staff/enrol")
    page.keyboard.press("Tab")  # the skip link
    controls = {
        "skip link": page.get_by_role("link", name="Skip to content"),
        "menu link": page.get_by_role("link", name="Dashboard"),
        "field": page.get_by_label("Full name"),
        "tick box": page.get_by_label("Text message"),
        "button": page.get_by_role("button", name="Enrol and plan messages"),
        "header button": page.get_by_role("button", name="Sign out"),
    }
    for name, control in controls.items():
        control.focus()
        style, width, colour, shadow = control.evaluate(FOCUS_STYLE)
        assert (style, width, colour) == ("solid", "3px", "rgb(255, 221, 0)"), name
        assert "rgb(11, 12, 12)" in shadow, (name, shadow)


#: What sticks out furthest to the right: the element to fix when a page scrolls sideways.
WIDEST = """() => {
  let worst = null, right = 0;
  for (const el of document.querySelectorAll('main *')) {
    if (el.closest('.table-scroll')) continue;  // scrolls inside its own box
    const r = el.getBoundingClientRect().right;
    if (r > right) { right = r; worst = el; }
  }
  return worst ? `${worst.tagName.toLowerCase()}.${worst.className} (${Math.round(right)} px)` : '';
}"""


def test_no_page_scrolls_sideways_at_320_px(
    narrow: BrowserContext, live: LiveServer, seeded: Seeded
) -> None:
    page = narrow.new_page()
    pages = [
        "/staff/",
        f"/staff/patients/{seeded.patient_id}",
        "/staff/preview?edd=2027-06-01&tz=Europe/London",
        "/staff/alerts",
        f"/staff/alerts/{seeded.params['alert_id']}",
        f"/staff/outbox/{seeded.params['message_id']}",
        f"/staff/outbox/{seeded.sms_id}",
        "/staff/enrol",
        "/staff/campaigns",
        "/staff/campaigns/leg-cramps",
        "/staff/campaigns/leg-cramps/draft",
        "/staff/campaigns/leg-cramps/draft/steps/clot-warning-signs",
        "/staff/campaigns/leg-cramps/draft/approve",
    ]
    wide = {}
    for path in pages:
        page.goto(live.url + path)
        width = page.evaluate("document.scrollingElement.scrollWidth")
        if width > NARROW:
            wide[path] = (width, page.evaluate(WIDEST))
    screenshot(page, "enrol-narrow")
    page.goto(f"{live.url}/staff/patients/{seeded.patient_id}")
    screenshot(page, "patient-narrow")
    assert not wide, f"these pages scroll sideways at {NARROW} px: {wide}"
