"""The campaign pages, through the staff UI, on SQLite and PostgreSQL: a draft goes live only
when a second clinician approves it (its author, an admin, a viewer and an operator cannot);
a message already planned keeps its version unless "apply to pending" is ticked; pausing and
ending for everyone; a version out as a zip and back in as a draft (and unsafe zips refused);
the live check as staff type."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from sqlalchemy import func, select

from campaigns import content_editing
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.drafts import bundle_from_zip, step_form, zip_of
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.models import AuditEvent, CampaignVersion, Enrollment
from campaigns.web.app import create_app
from tests.integration.helpers import enroll_with, fake_sms, rows
from tests.integration.staff import StaffClient, add_member

CAMPAIGN = "leg-cramps"
PAGE = f"/staff/campaigns/{CAMPAIGN}"
STOP = " Reply STOP to end"
Member = Callable[..., StaffClient]


@pytest.fixture
def member(services: Services) -> Iterator[Member]:
    """A signed-in member of the given role, each in their own browser."""
    app = create_app(services)
    with ExitStack() as stack:

        def make(role: str, email: str | None = None) -> StaffClient:
            client = stack.enter_context(TestClient(app, follow_redirects=False))
            return StaffClient(client, add_member(services, role, email))

        yield make


def draft(services: Services) -> tuple[CampaignVersion, Any]:
    found = content_editing.draft_of(services.db, CAMPAIGN)
    assert found is not None
    return found


def live(services: Services) -> CampaignVersion:
    found = content_editing.live_of(services.db, CAMPAIGN)
    assert found is not None
    return found[0]


def notice(who: StaffClient, page: str) -> str:
    """What the page says after an action (its notice or problem)."""
    found = re.search(r'<p class="(?:notice|problem)"[^>]*>([^<]+)</p>', who.get(page).text)
    return found.group(1) if found else ""


def edit_step(who: StaffClient, services: Services, step: str, **changes: Any) -> Response:
    """Open a draft (if none), then save one step with its form's values and `changes`."""
    if content_editing.draft_of(services.db, CAMPAIGN) is None:
        assert who.post(f"{PAGE}/draft").status_code == 303
    row, bundle = draft(services)
    form = step_form(bundle, step)
    assert form is not None
    data: dict[str, Any] = {
        "anchor": form.anchor,
        "weeks": form.weeks,
        "days": form.days,
        "valid_days": form.valid_days,
        "kind": form.kind,
        "channels": list(form.channels),
        "catch_up": "yes" if form.catch_up else "",
        "topic": form.topic,
        "sms": form.sms,
        "subject": form.subject,
        "body": form.body,
        "seen_hash": row.content_hash,
    }
    data.update(changes)
    return who.post(f"{PAGE}/draft/steps/{step}", data)


def approve(who: StaffClient, *, apply: bool = False, note: str = "") -> Response:
    page = who.get(f"{PAGE}/draft/approve").text
    seen = re.search(r'name="seen_hash" value="([0-9a-f]{64})"', page)
    assert seen, "no approval form on the page"
    data = {"seen_hash": seen.group(1), "note": note}
    if apply:
        data["apply_to_pending"] = "yes"
    return who.post(f"{PAGE}/draft/approve", data)


def sms_text(words: str) -> str:
    return "{{ clinic.short_name }}: " + words + STOP


def test_a_draft_goes_live_only_when_another_clinician_approves_it(
    services: Services, member: Member
) -> None:
    author = member("clinician", "author@clinic.example")
    reviewer = member("clinician", "reviewer@clinic.example")
    admin, viewer, operator = member("admin"), member("viewer"), member("operator")
    saved = edit_step(author, services, "welcome", sms=sms_text("welcome to short leg-care tips."))
    assert saved.status_code == 303
    assert notice(author, saved.headers["location"]).startswith("Saved. The checks found no")

    # Everyone reads the campaign; only editors edit; only another clinician approves.
    for who in (viewer, operator):
        assert who.get("/staff/campaigns").status_code == 200
        assert who.get(PAGE).status_code == 200
        assert who.get(f"{PAGE}/draft").status_code == 403
        assert who.post(f"{PAGE}/pause", {"note": "x"}).status_code == 403
    seen = draft(services)[0].content_hash
    for who in (viewer, operator, admin):
        answer = who.post(f"{PAGE}/draft/approve", {"seen_hash": seen})
        assert answer.status_code == 403, who.email
    assert "Only a clinician can approve" in admin.get(f"{PAGE}/draft/approve").text
    own = author.get(f"{PAGE}/draft/approve").text
    assert "a different clinician must approve it" in own and "Approve version 2" not in own
    refused = author.post(f"{PAGE}/draft/approve", {"seen_hash": seen})
    assert refused.status_code == 303
    assert "different clinician must approve" in notice(author, refused.headers["location"])
    assert live(services).number == 1

    review = reviewer.get(f"{PAGE}/draft/approve").text
    assert "welcome to short leg-care tips." in review and seen in review  # the change, the hash
    done = approve(reviewer, note="checked against the leaflet")
    assert done.status_code == 303 and done.headers["location"] == PAGE
    now_live = live(services)
    assert now_live.number == 2
    assert (now_live.approved_by or "").endswith(":reviewer@clinic.example")
    assert now_live.approved_hash == seen
    assert services.catalog.version(CAMPAIGN) == now_live.id
    page = reviewer.get(PAGE).text
    assert "Version 2, approved by reviewer@clinic.example" in page
    assert "checked against the leaflet" in page and seen[:12] in page
    assert "Santi: welcome to short leg-care tips. Reply STOP to end" in page
    assert "reviewer@clinic.example" in viewer.get("/staff/campaigns").text
    with services.db.session() as session:
        [event] = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "campaign_approved")
        ).all()
    assert event.actor.endswith(":reviewer@clinic.example")


def test_a_planned_message_keeps_its_version_unless_apply_to_pending_is_ticked(
    services: Services, member: Member, clock: MovableClock
) -> None:
    author = member("clinician", "author@clinic.example")
    reviewer = member("clinician", "reviewer@clinic.example")
    # At 13 weeks: the welcome goes now, the week-14 text is planned a week ahead.
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=13)
    first = live(services).id
    planned = {r.step_key: r for r in rows(services, done.enrollment_id)}
    assert planned["cramps-what-to-expect"].content_version == first

    edit_step(author, services, "welcome", sms=sms_text("welcome, version two."))
    edit_step(author, services, "cramps-what-to-expect", sms=sms_text("cramps, version two."))
    assert approve(reviewer).status_code == 303
    assert "keep the version they were planned with" in notice(reviewer, PAGE)
    kept = {r.step_key: r for r in rows(services, done.enrollment_id)}
    assert kept["cramps-what-to-expect"].content_version == first
    tick(services, InlineQueue(services))
    assert fake_sms(services).sent[-1].body.startswith("Santi: thanks for joining")

    edit_step(author, services, "cramps-what-to-expect", sms=sms_text("cramps, version three."))
    assert approve(reviewer, apply=True).status_code == 303
    assert "1 messages already planned now use it" in notice(reviewer, PAGE)
    third = live(services)
    moved = {r.step_key: r for r in rows(services, done.enrollment_id)}
    assert (third.number, moved["cramps-what-to-expect"].content_version) == (3, third.id)
    clock.advance(timedelta(days=7, hours=1))
    tick(services, InlineQueue(services))
    assert fake_sms(services).sent[-1].body == "Santi: cramps, version three. Reply STOP to end"


def test_pause_resume_and_end_for_everyone(services: Services, member: Member) -> None:
    clinician = member("clinician")
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)

    def status() -> str:
        with services.db.session() as session:
            found = session.get(Enrollment, done.enrollment_id)
            assert found is not None
            return found.status

    no_note = clinician.post(f"{PAGE}/pause", {"note": " "})
    assert "Note: say why" in notice(clinician, no_note.headers["location"])
    assert status() == "active"
    clinician.post(f"{PAGE}/pause", {"note": "leaflet under review"})
    assert status() == "paused"
    page = clinician.get(PAGE).text
    assert "Paused for everyone" in page and "leaflet under review" in page
    form = clinician.get("/staff/enrol").text
    assert re.search(
        r'<option value="leg-cramps"[^>]*disabled>Leg care in pregnancy \(paused', form
    )
    refused = clinician.post("/staff/enrol", {"name": "New Patient", "campaign": CAMPAIGN})
    assert refused.status_code == 400 and "paused for everyone" in refused.text
    clinician.post(f"{PAGE}/resume", {"note": "review done"})
    assert status() == "active"
    unconfirmed = clinician.post(f"{PAGE}/end", {"note": "programme retired"})
    assert "tick the box" in notice(clinician, unconfirmed.headers["location"])
    assert status() == "active"
    clinician.post(f"{PAGE}/end", {"note": "programme retired", "confirm": "yes"})
    assert status() == "stopped"
    page = clinician.get(PAGE).text
    assert "Ended for everyone" in page and "Pause for everyone" not in page
    with services.db.session() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.action.like("campaign_%"))
        ).all()
    assert actions == ["campaign_paused", "campaign_running", "campaign_ended"]


def _upload(who: StaffClient, data: bytes) -> Response:
    return who.client.post(
        "/staff/campaigns/import",
        data={"csrf_token": who.csrf},
        files={"file": ("campaign.zip", data, "application/zip")},
    )


def _versions(services: Services) -> int:
    with services.db.session() as session:
        return int(session.scalar(select(func.count()).select_from(CampaignVersion)) or 0)


def test_a_version_exports_as_a_zip_and_comes_back_as_a_draft(
    services: Services, member: Member
) -> None:
    admin = member("admin")
    exported = admin.get(f"{PAGE}/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/zip"
    assert 'filename="leg-cramps-v1.zip"' in exported.headers["content-disposition"]
    bundle = bundle_from_zip(exported.content)
    assert bundle.content_hash() == live(services).content_hash

    # Unsafe or wrong files change nothing, and say why.
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("campaign.yaml", "key: x\n")
        archive.writestr("../../etc/cron.d/x.j2", "x")
    broken = dict(
        bundle.definition, steps=[dict(bundle.definition["steps"][0], offset={"weeks": 99})]
    )
    for data, said in (
        (evil.getvalue(), "not part of a campaign folder"),
        (b"not a zip", "not a zip file"),
        (zip_of(type(bundle)(broken, bundle.templates)), "field &#39;offset.weeks&#39;"),
    ):
        answer = _upload(admin, data)
        assert answer.status_code == 400 and said in answer.text, answer.text[-2000:]
    assert _versions(services) == 1

    bundle.templates["en/welcome.sms.j2"] = sms_text("welcome back from git.")
    imported = _upload(admin, zip_of(bundle))
    assert imported.status_code == 303 and imported.headers["location"] == f"{PAGE}/draft"
    row, stored = draft(services)
    assert (row.source, row.number) == ("import", 2)
    assert stored.templates["en/welcome.sms.j2"] == sms_text("welcome back from git.")
    again = _upload(admin, zip_of(bundle))
    assert again.status_code == 400 and "already has a draft" in again.text
    assert bundle_from_zip(admin.get(f"{PAGE}/export?version={row.id}").content) == stored


def test_the_live_check_answers_the_count_and_problems_by_field(
    services: Services, member: Member
) -> None:
    editor = member("clinician")
    assert editor.post(f"{PAGE}/draft").status_code == 303
    before = draft(services)[0].content_hash
    fields: dict[str, Any] = {"step": "welcome", "anchor": "enrolment", "weeks": "0", "days": "0"}
    fields |= {"valid_days": "3", "kind": "service", "channels": ["sms"]}
    # "Santi: " (7) + words + " Reply STOP to end" (18): 160 fits one text, 161 does not.
    for length, units, over in ((135, 160, False), (136, 161, True)):
        answer = editor.post(
            f"{PAGE}/draft/check",
            {**fields, "sms": sms_text("a" * length)},
            headers={"X-CSRF-Token": editor.csrf},
        )
        assert answer.status_code == 200
        found = answer.json()
        usual = found["sms"][0]
        assert (usual["units"], usual["over"]) == (units, over)
        expected = "160 of 160 characters, 1 text" if not over else "161 of 160 characters, 2 texts"
        assert usual["words"].startswith(expected)
        assert bool(found["problems"].get("sms")) is over
    wrong = editor.post(
        f"{PAGE}/draft/check",
        {**fields, "weeks": "x", "sms": "Hi {{ patient.phone }}"},
        headers={"X-CSRF-Token": editor.csrf},
    ).json()["problems"]
    assert wrong["weeks"] == ["write a whole number, like 0, 6 or 14"]
    assert any("“patient” cannot be used here" in p for p in wrong["sms"])
    assert draft(services)[0].content_hash == before  # nothing saved
    forged = editor.client.post(f"{PAGE}/draft/check", data=fields)
    assert forged.status_code == 403
