"""Campaign versions: seeded from the repository, changed only by a second clinician's
sign-off, and each message sent from the version it was written with."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from campaigns import campaign_states, content_versions, delivery, enrollments
from campaigns.bootstrap import Services
from campaigns.rules.bundles import Bundle, read_bundle, write_bundle
from campaigns.rules.catalog import CatalogError
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.roles import Role
from campaigns.rules.vocabulary import Channel
from campaigns.storage.models import AuditEvent, CampaignVersion, Enrollment
from campaigns.storage.models import ScheduledMessage as SM
from campaigns.storage.patients import lock_patient
from tests.integration.helpers import enroll_with, enrollment, fake_sms, rows

CAMPAIGN = "leg-cramps"
AUTHOR, REVIEWER = "author@clinic.example", "reviewer@clinic.example"
NEW_WELCOME = (
    "{{ clinic.short_name }}: welcome! Short leg-care tips will come by text. "
    "Questions? Call {{ clinic.phone }}. Reply STOP to end"
)


def live(services: Services) -> CampaignVersion:
    with services.db.session() as session:
        found = content_versions.current(session, CAMPAIGN, content_versions.LIVE)
        assert found is not None
        return found


def draft_with_new_welcome(services: Services) -> int:
    now = services.clock.now()
    draft_id = content_versions.open_draft(services.db, CAMPAIGN, AUTHOR, now)
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        bundle = content_versions.bundle_of(row)
    bundle.templates["en/welcome.sms.j2"] = NEW_WELCOME
    content_versions.save_draft(services.db, draft_id, bundle, AUTHOR, now)
    return draft_id


def approve(services: Services, draft_id: int, *, pending: bool = False) -> None:
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        seen = row.content_hash
    content_versions.approve(
        services.db,
        draft_id,
        approver=REVIEWER,
        role=Role.CLINICIAN,
        seen_hash=seen,
        note="checked against the clot leaflet",
        problems=[],
        apply_to_pending=pending,
        now=services.clock.now(),
    )
    services.catalog.refresh(force=True)  # type: ignore[attr-defined]


def send_welcome_sms(services: Services) -> str:
    claimed = delivery.claim_due(services.db, services.clock.now(), 1000, 100)
    for channel, ids in claimed.batches:
        if channel is Channel.SMS:
            services.deliverer.send_batch(ids, claimed.token)
    return fake_sms(services).sent[-1].body


def test_the_repository_seeds_version_one_live(services: Services) -> None:
    version = live(services)
    assert (version.number, version.source, version.approved_by) == (1, "seed", "repository")
    folder = services.settings.templates_dir / CAMPAIGN
    assert version.content_hash == read_bundle(folder).content_hash()
    assert services.catalog.version(CAMPAIGN) == version.id
    # Seeding again (another process starting) adds nothing.
    assert (
        content_versions.seed(services.db, services.settings.templates_dir, services.clock.now())
        == []
    )


def test_a_draft_goes_live_only_with_another_clinicians_sign_off(services: Services) -> None:
    draft_id = draft_with_new_welcome(services)
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None and row.state == "draft"
        seen = row.content_hash

    def now() -> datetime:
        return services.clock.now()

    def attempt(approver: str, role: Role, seen_hash: str = seen) -> None:
        content_versions.approve(
            services.db,
            draft_id,
            approver=approver,
            role=role,
            seen_hash=seen_hash,
            note="",
            problems=[],
            apply_to_pending=False,
            now=services.clock.now(),
        )

    with pytest.raises(content_versions.ApprovalError, match="different clinician"):
        attempt(AUTHOR, Role.CLINICIAN)
    # A colleague saving it (a comma, or nothing at all) does not make the author a reviewer.
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        bundle = content_versions.bundle_of(row)
    content_versions.save_draft(services.db, draft_id, bundle, "colleague@clinic.example", now())
    with pytest.raises(content_versions.ApprovalError, match="different clinician"):
        attempt(AUTHOR, Role.CLINICIAN)
    with pytest.raises(content_versions.ApprovalError, match="different clinician"):
        attempt("colleague@clinic.example", Role.CLINICIAN)
    with pytest.raises(content_versions.ApprovalError, match="only a clinician"):
        attempt(REVIEWER, Role.ADMIN)
    with pytest.raises(content_versions.ApprovalError, match="changed since you opened"):
        attempt(REVIEWER, Role.CLINICIAN, "0" * 64)
    with pytest.raises(content_versions.ApprovalError, match="problems"):
        content_versions.approve(
            services.db,
            draft_id,
            approver=REVIEWER,
            role=Role.CLINICIAN,
            seen_hash=seen,
            note="",
            problems=["Text message: 171 characters"],
            apply_to_pending=False,
            now=services.clock.now(),
        )
    assert live(services).number == 1  # nothing changed yet

    approve(services, draft_id)
    now_live = live(services)
    assert (now_live.id, now_live.number, now_live.approved_by) == (draft_id, 2, REVIEWER)
    assert now_live.approved_hash == now_live.content_hash == seen
    assert now_live.approval_note == "checked against the clot leaflet"
    with services.db.session() as session:
        first = session.scalars(select(CampaignVersion).where(CampaignVersion.number == 1)).one()
        assert first.state == "retired" and first.live_until is not None
        actions = session.scalars(select(AuditEvent.action)).all()
    assert "campaign_approved" in actions and "campaign_draft_saved" in actions
    assert services.catalog.version(CAMPAIGN) == draft_id


def test_an_invalid_definition_is_refused_naming_the_step_and_field(services: Services) -> None:
    draft_id = content_versions.open_draft(services.db, CAMPAIGN, AUTHOR, services.clock.now())
    assert content_versions.open_draft(services.db, CAMPAIGN, REVIEWER, services.clock.now()) == (
        draft_id
    )
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        bundle = content_versions.bundle_of(row)
    bundle.definition["steps"][1]["offset"] = {"weeks": 99}
    with pytest.raises(
        CatalogError, match=r"step 'early-pregnancy' \(steps\[1\]\), field 'offset.weeks'"
    ):
        content_versions.save_draft(services.db, draft_id, bundle, AUTHOR, services.clock.now())
    renamed = Bundle({**bundle.definition, "key": "other"}, bundle.templates)
    renamed.definition["steps"][1]["offset"] = {"weeks": 12}
    with pytest.raises(InputError, match="cannot change its key"):
        content_versions.save_draft(services.db, draft_id, renamed, AUTHOR, services.clock.now())


def test_a_pending_send_keeps_its_version_unless_staff_apply_the_new_one(
    services: Services,
) -> None:
    kept = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    approve(services, draft_with_new_welcome(services))
    [old_row] = [r for r in rows(services, kept.enrollment_id) if r.step_key == "welcome"]
    assert old_row.content_version == 1
    later = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    [new_row] = [r for r in rows(services, later.enrollment_id) if r.step_key == "welcome"]
    assert new_row.content_version == live(services).id

    claimed = delivery.claim_due(services.db, services.clock.now(), 1000, 100)
    for _, ids in claimed.batches:
        services.deliverer.send_batch(ids, claimed.token)
    bodies = {m.message_id: m.body for m in fake_sms(services).sent}
    assert bodies[old_row.id].startswith("Santi: thanks for joining")
    assert bodies[new_row.id].startswith("Santi: welcome! Short leg-care tips")
    with services.db.session() as session:
        refs = {r.id: r.template_ref for r in session.execute(select(SM.id, SM.template_ref))}
    assert "@v1:" in refs[old_row.id] and "@v2:" in refs[new_row.id]


def test_apply_to_pending_repoints_rows_and_cancels_removed_steps(services: Services) -> None:
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=13)
    before = {r.step_key: r for r in rows(services, done.enrollment_id) if r.status == "pending"}
    assert {"welcome", "cramps-what-to-expect"} <= set(before)
    draft_id = draft_with_new_welcome(services)
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        bundle = content_versions.bundle_of(row)
    bundle.definition["steps"] = [
        s for s in bundle.definition["steps"] if s["key"] != "cramps-what-to-expect"
    ]
    content_versions.save_draft(services.db, draft_id, bundle, AUTHOR, services.clock.now())
    approve(services, draft_id, pending=True)
    after = {r.id: r for r in rows(services, done.enrollment_id)}
    assert after[before["welcome"].id].content_version == draft_id
    removed = after[before["cramps-what-to-expect"].id]
    assert (removed.status, removed.reason) == ("cancelled", "step_removed")
    assert send_welcome_sms(services).startswith("Santi: welcome! Short leg-care tips")


def test_export_and_import_round_trip_as_a_draft(services: Services, tmp_path: Path) -> None:
    row, bundle = content_versions.export(services.db, CAMPAIGN)
    write_bundle(bundle, tmp_path / CAMPAIGN)
    again = read_bundle(tmp_path / CAMPAIGN)
    assert again.content_hash() == row.content_hash
    draft_id = content_versions.import_draft(services.db, again, AUTHOR, services.clock.now())
    with services.db.session() as session:
        draft = session.get(CampaignVersion, draft_id)
        assert draft is not None and (draft.state, draft.source, draft.number) == (
            "draft",
            "import",
            2,
        )
    with pytest.raises(StateError, match="already has a draft"):
        content_versions.import_draft(services.db, again, AUTHOR, services.clock.now())


def test_pausing_a_campaign_stops_its_sends_and_new_enrolments(services: Services) -> None:
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    changed = campaign_states.pause(
        services.db, CAMPAIGN, AUTHOR, "leaflet review", services.clock.now()
    )
    assert (changed.state, changed.changed) == ("paused", 1)
    assert {r.status for r in rows(services, done.enrollment_id)} <= {"cancelled", "skipped"}
    with pytest.raises(InputError, match="paused for everyone"):
        enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    resumed = campaign_states.resume(
        services.db, services.planner, CAMPAIGN, REVIEWER, "", services.clock.now()
    )
    assert (resumed.state, resumed.changed) == ("running", 1)
    assert any(r.status == "pending" for r in rows(services, done.enrollment_id))
    ended = campaign_states.end(
        services.db, CAMPAIGN, REVIEWER, "programme retired", services.clock.now()
    )
    assert ended.changed == 1
    with services.db.session() as session:
        status = session.get(Enrollment, done.enrollment_id)
        assert status is not None and (status.status, status.status_reason) == (
            "stopped",
            "campaign_ended",
        )
    with pytest.raises(StateError, match="has ended"):
        campaign_states.resume(
            services.db, services.planner, CAMPAIGN, AUTHOR, "", services.clock.now()
        )


def test_apply_to_pending_cancels_a_step_that_became_another_kind(services: Services) -> None:
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    [welcome] = [r for r in rows(services, done.enrollment_id) if r.step_key == "welcome"]
    draft_id = content_versions.open_draft(services.db, CAMPAIGN, AUTHOR, services.clock.now())
    with services.db.session() as session:
        row = session.get(CampaignVersion, draft_id)
        assert row is not None
        bundle = content_versions.bundle_of(row)
    # A welcome turned into an offer needs marketing consent, which this row was not checked
    # against when it was written: it is not re-pointed but cancelled.
    bundle.definition["steps"][0]["kind"] = "marketing"
    content_versions.save_draft(services.db, draft_id, bundle, AUTHOR, services.clock.now())
    approve(services, draft_id, pending=True)
    [after] = [r for r in rows(services, done.enrollment_id) if r.id == welcome.id]
    assert (after.status, after.reason, after.kind) == ("cancelled", "step_changed", "service")


def test_a_loss_hold_cleared_during_a_campaign_pause_stays_paused(services: Services) -> None:
    done = enroll_with(services, {"channels": "sms", "email": ""}, weeks=20)
    now = services.clock.now()
    with services.db.session() as session:
        enrollments.hold_for_loss(session, lock_patient(session, done.patient_id), now, actor="t")
    campaign_states.pause(services.db, CAMPAIGN, AUTHOR, "leaflet review", now)
    with services.db.session() as session:
        patient = lock_patient(session, done.patient_id)
        assert enrollments.clear_loss_hold(session, services.planner, patient, now, actor="t") == []
    held = enrollment(services, done.enrollment_id)
    assert (held.status, held.status_reason) == ("paused", "campaign_paused")
    assert not any(r.status == "pending" for r in rows(services, done.enrollment_id))
    with pytest.raises(StateError, match="paused for everyone"):
        enrollments.resume(services.db, services.planner, done.enrollment_id, now, actor="t")
    campaign_states.resume(services.db, services.planner, CAMPAIGN, REVIEWER, "", now)
    assert enrollment(services, done.enrollment_id).status == "active"
    assert any(r.status == "pending" for r in rows(services, done.enrollment_id))
