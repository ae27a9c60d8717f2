"""Enrolment writes the patient, consent, enrollment, plan and audit in one transaction."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from campaigns import enrollments
from campaigns.bootstrap import Services
from campaigns.rules.errors import InputError
from campaigns.rules.intake import parse_enrollment
from campaigns.rules.vocabulary import ConsentSource
from campaigns.storage.models import AuditEvent, ConsentEvent, Enrollment, Patient, ScheduledMessage
from tests.integration.helpers import edd_at, enroll, enroll_with, rows
from tests.integration.processes import ROOT


def count(services: Services, model: type) -> int:
    with services.db.session() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_enrollment_writes_everything(services: Services) -> None:
    done = enroll(services, weeks=33, days=2, consent="programme,marketing_sms")
    with services.db.session() as session:
        patient = session.get(Patient, done.patient_id)
        assert patient is not None and patient.phone and patient.phone.startswith("+44")
        consents = session.execute(
            select(ConsentEvent.purpose, ConsentEvent.source).where(
                ConsentEvent.patient_id == done.patient_id
            )
        ).all()
        assert sorted(consents) == [("marketing_sms", "api"), ("programme", "api")]
        audit = session.execute(select(AuditEvent)).scalars().one()
        assert (audit.action, audit.patient_id, audit.detail["count"]) == (
            "enrolled",
            done.patient_id,
            1,
        )
        record = session.get(Enrollment, done.enrollment_id)
        assert record is not None
    # Past steps are recorded as skips on the enrollment, with their reason.
    skips = {(step, channel): reason for _, step, channel, reason, _ in record.skipped}
    assert skips[("clot-warning-signs", "sms")] == "before_enrolment"
    assert skips[("physio-offer", "email")] == "no_marketing_consent"
    # Sends due within the horizon are outbox rows; the rest wait for extend_plans.
    stored = {
        (r.step_key, r.channel): (r.status, r.reason) for r in rows(services, done.enrollment_id)
    }
    assert stored[("clot-and-breathing-signs", "sms")] == ("pending", "catch_up")
    assert stored[("pre-eclampsia-signs", "sms")] == ("pending", "catch_up")
    # At most two texts a week: the physio offer (35+0, 12 days away) is planned, but moves
    # past the horizon behind the two catch-ups and the 34-week step.
    planned = {(p.step.key, p.channel.value): p for p in done.planned}
    assert planned[("physio-offer", "sms")].status.value == "pending"
    assert ("physio-offer", "sms") not in stored
    assert ("after-birth-clot-risk", "sms") not in stored  # 37+0: beyond the horizon
    assert record.planned_until == services.clock.now() + services.planner.horizon
    assert len(stored) == len(done.stored)
    for row in rows(services, done.enrollment_id):
        assert row.due_at.tzinfo is not None and row.schedule_version == 1
        assert row.next_attempt_at == row.due_at and row.expires_at is not None
        assert row.due_at < record.planned_until


def test_the_timeline_shows_rows_skips_and_the_rest_of_the_plan(services: Services) -> None:
    from campaigns import queries

    done = enroll(services, weeks=33, days=2)
    with services.db.session() as session:
        patient = session.get(Patient, done.patient_id)
        assert patient is not None
        entries = queries.timeline(session, patient, services.planner, services.clock.now())
    by_key = {(e.step, e.channel): e for e in entries}
    assert len(by_key) == len(done.planned)
    assert by_key[("cramps-what-to-expect", "sms")].status == "skipped"
    assert by_key[("clot-and-breathing-signs", "sms")].status == "pending"
    later = by_key[("after-birth-clot-risk", "sms")]
    assert (later.status, later.id) == ("planned", None)
    planned = {(p.step.key, p.channel.value): p.due_at.isoformat() for p in done.planned}
    assert {k: e.due_utc for k, e in by_key.items()} == planned


def test_a_known_phone_number_writes_nothing(services: Services) -> None:
    enroll(services, phone="+447400055555")
    before = [count(services, m) for m in (Patient, Enrollment, ScheduledMessage, ConsentEvent)]
    with pytest.raises(InputError, match="phone: this number already belongs to patient"):
        enroll(services, phone="07400 055555")
    after = [count(services, m) for m in (Patient, Enrollment, ScheduledMessage, ConsentEvent)]
    assert after == before


def test_a_duplicate_inside_a_batch_names_both_rows_and_writes_nothing(services: Services) -> None:
    now = services.clock.now()
    fields = {
        "name": "A",
        "edd": edd_at(now.date(), 20).isoformat(),
        "edd_source": "scan",
        "consent": "programme",
    }
    requests = [
        parse_enrollment({**fields, "phone": p}, services.intake, now)
        for p in ("+447400066601", "+447400066602", "+447400066601")
    ]
    with pytest.raises(InputError, match="row 3: phone: the same number is in rows 1 and 3"):
        enrollments.enroll_many(
            services.db, services.planner, requests, now, source=ConsentSource.CSV, actor="test"
        )
    assert count(services, Patient) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("phone", "12345", "phone: "),
        ("phone", "+442079460000", "is not a mobile number"),
        ("email", "not-an-email", "email: *** is not a valid email address"),
        ("tz", "Europe/Atlantis", "tz: unknown timezone 'Europe/Atlantis'"),
        ("edd", "2028-06-01", "edd: 2028-06-01 is more than 44 weeks after today"),
        ("edd", "2026-01-01", "edd: 2026-01-01 puts today at 48 weeks 4 days"),
        ("edd", "01/06/2026", "edd: '01/06/2026' is not a date"),
        ("consent", "marketing_sms", "consent: the patient must agree to the programme"),
        ("consent", "programme,spam", "consent: 'spam' is not a consent"),
        ("edd_source", "guess", "edd_source: 'guess' is not one of scan, lmp, patient, clinician"),
        ("channels", "sms,fax", "channels: 'fax' is not a way to send tips"),
        ("language", "english!", "language: 'english!' is not a language code"),
        ("name", "", "name: is required"),
    ],
)
def test_bad_input_names_the_field(
    services: Services, field: str, value: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        enroll_with(services, {field: value})
    assert message in str(caught.value)
    assert caught.value.field == field
    assert count(services, Patient) == 0


def test_email_channel_needs_an_email(services: Services) -> None:
    with pytest.raises(InputError, match="email: is needed to send tips by email"):
        enroll(services, email="", channels="email")


def test_after_a_loss_the_number_is_not_silently_enrolled_again(services: Services) -> None:
    done = enroll(services, phone="+447400077777")
    enrollments.record_loss(services.db, done.enrollment_id, services.clock.now(), actor="t")
    with pytest.raises(InputError, match=f"already belongs to patient {done.patient_id}"):
        enroll(services, phone="+447400077777")


def test_many_enrollments_in_one_transaction(services: Services) -> None:
    now = services.clock.now()
    requests = [
        parse_enrollment(
            {
                "name": f"P{i}",
                "phone": f"+4474001{i:05d}",
                "edd": edd_at(now.date(), 8 + i % 30).isoformat(),
                "edd_source": "lmp",
                "consent": "programme",
            },
            services.intake,
            now,
        )
        for i in range(250)
    ]
    done = enrollments.enroll_many(
        services.db, services.planner, requests, now, source=ConsentSource.CSV, actor="test"
    )
    assert len({d.patient_id for d in done}) == 250
    assert count(services, ScheduledMessage) == sum(len(d.stored) for d in done)
    assert count(services, Enrollment) == 250 and count(services, ConsentEvent) == 250


def test_one_import_with_two_campaigns_plans_each_patient_on_their_own(
    make_services: object, database_url: str, tmp_path: Path
) -> None:
    """Patients alike in every fact but the campaign must not share a plan."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    shutil.copytree(templates / "leg-cramps", templates / "short-course")
    definition = yaml.safe_load((templates / "short-course/campaign.yaml").read_text())
    definition["key"], definition["name"] = "short-course", "Short course"
    definition["steps"] = definition["steps"][:3]
    (templates / "short-course/campaign.yaml").write_text(yaml.safe_dump(definition))
    assert callable(make_services)
    services: Services = make_services(database_url, templates_dir=templates)
    now = services.clock.now()
    requests = [
        parse_enrollment(
            {
                "name": f"P{i}",
                "phone": f"+4474002{i:05d}",
                "edd": edd_at(now.date(), 12).isoformat(),
                "edd_source": "scan",
                "consent": "programme",
                "campaign": campaign,
            },
            services.intake,
            now,
        )
        for i, campaign in enumerate(["leg-cramps", "short-course", "leg-cramps"])
    ]
    done = enrollments.enroll_many(
        services.db, services.planner, requests, now, source=ConsentSource.CSV, actor="test"
    )
    allowed = {
        key: {
            step["key"]
            for step in yaml.safe_load((templates / key / "campaign.yaml").read_text())["steps"]
        }
        for key in ("leg-cramps", "short-course")
    }
    for request, enrolled in zip(requests, done, strict=True):
        assert {p.step.key for p in enrolled.planned} <= allowed[request.campaign]
    assert {p.step.key for p in done[0].planned} != {p.step.key for p in done[1].planned}
