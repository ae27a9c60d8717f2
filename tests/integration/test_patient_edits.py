"""Staff work on a patient's record (issue 13, Patients), through the staff UI, on SQLite and
PostgreSQL: editing her details (and what that re-plans), consent heard by phone or in
person, enrolling her again after a programme ended, the filtered patient list, and what
the patient page shows (open alerts first, acknowledgement notes, the texts still to go)."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from campaigns import alerts, enrollments, patient_list
from campaigns.bootstrap import Services
from campaigns.rules.content import Recipient
from campaigns.rules.replies import AlertSpec, Severity
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus
from campaigns.rules.window import zone
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.consents import suppressed_channels
from campaigns.storage.models import AuditEvent, ConsentEvent, Enrollment, Patient
from campaigns.web.app import create_app
from tests.integration.helpers import edd_at, enroll, fake_email, fake_sms, rows
from tests.integration.staff import StaffClient, add_member, sign_in


@pytest.fixture
def client(services: Services) -> Iterator[StaffClient]:
    with TestClient(create_app(services)) as test_client:
        yield sign_in(test_client, services, "clinician")


def patient(services: Services, patient_id: int) -> Patient:
    with services.db.session() as session:
        found = session.get(Patient, patient_id)
        assert found is not None
        return found


def details(services: Services, patient_id: int, **changes: Any) -> dict[str, Any]:
    """The edit form as it stands for the patient, with `changes` typed in."""
    p = patient(services, patient_id)
    form: dict[str, Any] = {
        "name": p.name,
        "phone": p.phone or "",
        "email": p.email or "",
        "clinic_ref": p.clinic_ref or "",
        "timezone": p.timezone,
        "language": p.language,
        "channels": ["sms", "email"],
    }
    form.update(changes)
    return form


def pending(services: Services, enrollment_id: int) -> list[Any]:
    return [r for r in rows(services, enrollment_id) if r.status == MessageStatus.PENDING]


def audits(services: Services, action: str) -> list[AuditEvent]:
    with services.db.session() as session:
        return list(
            session.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        )


# -- editing details ------------------------------------------------------------------------


def test_the_edit_form_shows_her_details(client: StaffClient, services: Services) -> None:
    done = enroll(services, weeks=20, clinic_ref="SC-1001")
    page = client.get(f"/staff/patients/{done.patient_id}/edit")
    assert page.status_code == 200
    assert 'value="SC-1001"' in page.text and 'value="Europe/London"' in page.text
    assert "Time zone" in page.text and "Mobile number" in page.text


def test_a_new_time_zone_moves_her_pending_messages(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    before = {(r.step_key, r.channel): r.due_at for r in pending(services, done.enrollment_id)}
    assert before
    answer = client.post(
        f"/staff/patients/{done.patient_id}/edit",
        data=details(services, done.patient_id, timezone="America/New_York"),
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    after = pending(services, done.enrollment_id)
    assert after and all(r.schedule_version == 2 for r in after)
    new_york = zone("America/New_York")
    for row in after:
        assert 9 <= row.due_at.astimezone(new_york).hour < 20  # her new local send window
        if (row.step_key, row.channel) in before:
            assert row.due_at != before[row.step_key, row.channel]
    old = [r for r in rows(services, done.enrollment_id) if r.schedule_version == 1]
    assert old and all(r.status == MessageStatus.CANCELLED for r in old)
    assert {r.reason for r in old} == {"details_changed"}
    assert patient(services, done.patient_id).timezone == "America/New_York"
    page = client.get(f"/staff/patients/{done.patient_id}")
    assert "Saved: time zone." in page.text
    # The cancelled rows of version 1 are behind the toggle, not in the timeline.
    assert '<details class="superseded">' in page.text


def test_removing_text_messages_cancels_pending_texts(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    assert any(r.channel == Channel.SMS for r in pending(services, done.enrollment_id))
    answer = client.post(
        f"/staff/patients/{done.patient_id}/edit",
        data=details(services, done.patient_id, channels=["email"]),
        follow_redirects=False,
    )
    assert answer.status_code == 303
    left = pending(services, done.enrollment_id)
    assert left and {r.channel for r in left} == {Channel.EMAIL.value}
    with services.db.session() as session:
        assert session.get(Enrollment, done.enrollment_id).channels == "email"  # type: ignore[union-attr]
    [event] = audits(services, "patient_edited")
    assert event.detail["fields"] == ["channels"] and event.detail["replanned"] is True


def test_a_number_of_another_patient_is_refused_naming_the_field(
    client: StaffClient, services: Services
) -> None:
    first = enroll(services, weeks=20)
    second = enroll(services, weeks=20)
    theirs = patient(services, second.patient_id).phone
    mine = patient(services, first.patient_id).phone
    answer = client.post(
        f"/staff/patients/{first.patient_id}/edit",
        data=details(services, first.patient_id, phone=theirs, timezone="Europe/Dublin"),
    )
    assert answer.status_code == 400
    assert "Mobile number" in answer.text and "belongs to another patient" in answer.text
    assert 'aria-invalid="true"' in answer.text
    kept = patient(services, first.patient_id)
    assert kept.phone == mine and kept.timezone == "Europe/London"  # nothing half-written
    assert audits(services, "patient_edited") == []


def test_a_bad_number_is_named_in_staff_words(client: StaffClient, services: Services) -> None:
    done = enroll(services, weeks=20)
    answer = client.post(
        f"/staff/patients/{done.patient_id}/edit",
        data=details(services, done.patient_id, phone="0207 946 0000", timezone="Mars/Base"),
    )
    assert answer.status_code == 400
    assert "Mobile number: Enter a mobile number" in answer.text
    assert "***" not in answer.text


def test_a_new_email_clears_its_bounce_and_the_same_one_does_not(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    now = services.clock.now()
    with services.db.session() as session:
        session.execute(
            update(Patient)
            .where(Patient.id == done.patient_id)
            .values(
                email_invalid_at=now,
                email_invalid_reason="hard_bounce",
                phone_invalid_at=now,
                phone_invalid_reason="21211",
            )
        )
    # The same address, typed in another case: not a new address, the bounce stands.
    same = details(services, done.patient_id, email="PATIENT@example.com")
    client.post(f"/staff/patients/{done.patient_id}/edit", data=same)
    kept = patient(services, done.patient_id)
    assert kept.email_invalid_at is not None and kept.email == "patient@example.com"
    assert audits(services, "patient_edited") == []  # nothing changed
    new = details(services, done.patient_id, email="new.address@example.com")
    assert client.post(f"/staff/patients/{done.patient_id}/edit", data=new).status_code == 200
    changed = patient(services, done.patient_id)
    assert changed.email == "new.address@example.com" and changed.email_invalid_at is None
    assert changed.phone_invalid_at is not None  # the number did not change
    # A new number clears what the provider said of the old one.
    client.post(
        f"/staff/patients/{done.patient_id}/edit",
        data=details(services, done.patient_id, phone="07400 555123"),
    )
    renumbered = patient(services, done.patient_id)
    assert renumbered.phone == "+447400555123" and renumbered.phone_invalid_at is None
    # The audit names the fields, never their values.
    events = audits(services, "patient_edited")
    assert [e.detail["fields"] for e in events] == [["email"], ["phone"]]
    for event in events:
        text = repr(event.detail)
        assert "example.com" not in text and "555123" not in text
        assert event.actor.startswith("staff:")


def test_language_discreet_name_and_reference_are_saved_without_a_new_plan(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    form = details(
        services, done.patient_id, name="Ada New", language="pl", discreet="yes", clinic_ref="R9"
    )
    assert client.post(f"/staff/patients/{done.patient_id}/edit", data=form).status_code == 200
    saved = patient(services, done.patient_id)
    assert (saved.name, saved.language, saved.discreet, saved.clinic_ref) == (
        "Ada New",
        "pl",
        True,
        "R9",
    )
    assert all(r.schedule_version == 1 for r in rows(services, done.enrollment_id))
    [event] = audits(services, "patient_edited")
    assert event.detail["fields"] == ["name", "clinic_ref", "language", "discreet"]
    assert event.detail["replanned"] is False and "Ada" not in repr(event.detail)


# -- consent --------------------------------------------------------------------------------


def test_consent_withdrawn_by_phone_stops_sends_and_given_back_plans_again(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    assert pending(services, done.enrollment_id)
    wording = "You can stop these messages at any time."
    answer = client.post(
        f"/staff/patients/{done.patient_id}/consent",
        data={
            "purpose": "programme",
            "channel": "all",
            "change": "withdrawn",
            "source": "phone",
            "wording": wording,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert pending(services, done.enrollment_id) == []
    with services.db.session() as session:
        ledger = list(
            session.execute(
                select(ConsentEvent)
                .where(ConsentEvent.patient_id == done.patient_id, ConsentEvent.granted.is_(False))
                .order_by(ConsentEvent.id)
            ).scalars()
        )
        stopped = suppressed_channels(session, session.get(Patient, done.patient_id))  # type: ignore[arg-type]
    assert {e.channel for e in ledger} == {"sms", "email"}
    assert all(e.source == "phone" and e.wording == wording for e in ledger)
    assert all(e.actor.startswith("staff:") and "clinician@" in e.actor for e in ledger)
    assert stopped == {Channel.SMS, Channel.EMAIL}
    page = client.get(f"/staff/patients/{done.patient_id}")
    assert "Withdrawal recorded" in page.text and html.escape(wording) in page.text
    # Nothing goes out afterwards, however long we wait.
    for _ in range(4):
        services.clock.advance(timedelta(days=7))  # type: ignore[attr-defined]
        tick(services, InlineQueue(services))
    assert fake_sms(services).sent == [] and fake_email(services).sent == []
    client = StaffClient(client.client, add_member(services, "clinician", "later@clinic.example"))
    # Given back in person: the suppression lifted and the programme planned from now.
    answer = client.post(
        f"/staff/patients/{done.patient_id}/consent",
        data={
            "purpose": "programme",
            "channel": "sms",
            "change": "granted",
            "source": "in_person",
            "wording": "I agree Santi can use my due date and pregnancy to send me tips.",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    again = pending(services, done.enrollment_id)
    assert again and {r.channel for r in again} == {"sms"}
    assert [e.detail["granted"] for e in audits(services, "consent_recorded")] == [False, True]


def test_consent_without_the_words_is_refused_and_nothing_is_written(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    answer = client.post(
        f"/staff/patients/{done.patient_id}/consent",
        data={"purpose": "programme", "change": "withdrawn", "source": "phone", "wording": ""},
    )
    assert "Words read or shown to her" in answer.text
    assert len(pending(services, done.enrollment_id)) > 0
    assert audits(services, "consent_recorded") == []


def test_marketing_consent_given_by_phone_is_on_the_ledger(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    client.post(
        f"/staff/patients/{done.patient_id}/consent",
        data={
            "purpose": "marketing_email",
            "change": "granted",
            "source": "phone",
            "wording": "Offers by email?",
        },
    )
    with services.db.session() as session:
        last = session.execute(
            select(ConsentEvent).order_by(ConsentEvent.id.desc()).limit(1)
        ).scalar_one()
    assert (last.purpose, last.channel, last.granted) == ("marketing_email", "email", True)


# -- enrolling again --------------------------------------------------------------------------


def reenrol_form(weeks: int, today: Any) -> dict[str, Any]:
    return {
        "campaign": "leg-cramps",
        "edd": edd_at(today, weeks).isoformat(),
        "edd_source": "scan",
        "channels": ["sms"],
        "consent": ["programme"],
    }


def test_enrolling_again_is_refused_while_a_programme_is_live(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    answer = client.post(
        f"/staff/patients/{done.patient_id}/enrol",
        data=reenrol_form(10, services.clock.now().date()),
    )
    assert answer.status_code == 400 and "already enrolled in leg-cramps" in answer.text
    with services.db.session() as session:
        count = session.execute(
            select(Enrollment).where(Enrollment.patient_id == done.patient_id)
        ).all()
    assert len(count) == 1


@pytest.mark.parametrize("ending", ["completed", "stopped"])
def test_enrolling_again_after_a_programme_ended(
    client: StaffClient, services: Services, ending: str
) -> None:
    done = enroll(services, weeks=20)
    if ending == "stopped":
        enrollments.stop(
            services.db, done.enrollment_id, services.clock.now(), actor="test", reason="asked"
        )
    else:
        with services.db.session() as session:
            session.execute(
                update(Enrollment)
                .where(Enrollment.id == done.enrollment_id)
                .values(status=EnrollmentStatus.COMPLETED.value)
            )
    page = client.get(f"/staff/patients/{done.patient_id}")
    assert f"/staff/patients/{done.patient_id}/enrol" in page.text
    answer = client.post(
        f"/staff/patients/{done.patient_id}/enrol",
        data=reenrol_form(12, services.clock.now().date()),
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    with services.db.session() as session:
        both = list(
            session.execute(
                select(Enrollment)
                .where(Enrollment.patient_id == done.patient_id)
                .order_by(Enrollment.id)
            ).scalars()
        )
    assert [e.status for e in both] == [ending, "active"]
    assert pending(services, both[1].id)
    [event] = audits(services, "re_enrolled")
    assert event.enrollment_id == both[1].id and event.actor.startswith("staff:")


def test_enrolling_again_after_a_loss_needs_the_new_pregnancys_due_date(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    services.enrollments.record_loss(done.enrollment_id, actor="test")
    today = services.clock.now().date()
    same = client.post(f"/staff/patients/{done.patient_id}/enrol", data=reenrol_form(20, today))
    assert same.status_code == 400
    assert "Due date" in same.text and "pregnancy that ended" in same.text
    bad = client.post(
        f"/staff/patients/{done.patient_id}/enrol", data={**reenrol_form(8, today), "consent": []}
    )
    assert bad.status_code == 400 and "What she agreed to" in bad.text  # as the enrol form
    new = client.post(
        f"/staff/patients/{done.patient_id}/enrol",
        data=reenrol_form(8, today),
        follow_redirects=False,
    )
    assert new.status_code == 303
    with services.db.session() as session:
        statuses = session.execute(
            select(Enrollment.status)
            .where(Enrollment.patient_id == done.patient_id)
            .order_by(Enrollment.id)
        ).scalars()
        assert list(statuses) == ["ended_loss", "active"]


# -- the patient list -------------------------------------------------------------------------


def raise_for(services: Services, patient_id: int, severity: Severity, kind: str) -> int:
    with services.db.session() as session:
        return alerts.raise_alert(
            session,
            AlertSpec(severity, kind),
            services.clock.now(),
            patient_id=patient_id,
            inbound_id=None,
            matched=[],
        )


def test_the_patient_list_filters_and_pages(client: StaffClient, services: Services) -> None:
    first = enroll(services, weeks=8, name="Amy First")  # first trimester
    second = enroll(services, weeks=20, name="Bea Second")
    third = enroll(services, weeks=30, name="Cat Third")
    stopped = enroll(services, weeks=22, name="Dot Stopped")
    enrollments.stop(
        services.db, stopped.enrollment_id, services.clock.now(), actor="test", reason="asked"
    )
    raise_for(services, second.patient_id, Severity.AMBER, "calf_pain")

    def names(url: str) -> list[str]:
        page = client.get(url)
        assert page.status_code == 200, page.text
        return [n for n in ("Amy", "Bea", "Cat", "Dot") if f">{n} " in page.text]

    assert names("/staff/patients") == ["Amy", "Bea", "Cat", "Dot"]
    assert names("/staff/patients?status=stopped") == ["Dot"]
    assert names("/staff/patients?status=active&trimester=1") == ["Amy"]
    assert names("/staff/patients?status=active&trimester=2") == ["Bea"]
    assert names("/staff/patients?trimester=3") == ["Cat"]
    assert names("/staff/patients?alert=yes") == ["Bea"]
    assert names("/staff/patients?campaign=leg-cramps&status=active") == ["Amy", "Bea", "Cat"]
    assert names("/staff/patients?q=Cat") == ["Cat"]
    bad = client.get("/staff/patients?status=sleeping")
    assert bad.status_code == 400 and "Status: Choose a status" in bad.text
    # Keyset pages, newest first: each patient once, across pages, however deep.
    with services.db.session() as session:
        seen: list[int] = []
        before = None
        while True:
            page = patient_list.patient_page(
                session,
                patient_list.ListFilters(),
                services.clock.now().date(),
                before=before,
                limit=1,
            )
            seen += [r.patient_id for r in page.rows]
            if page.next_before is None:
                break
            before = page.next_before
    assert seen == [stopped.patient_id, third.patient_id, second.patient_id, first.patient_id]
    one = client.get("/staff/patients?status=active&before=" + str(third.enrollment_id))
    assert ">Bea " in one.text and ">Cat " not in one.text


def test_a_patient_enrolled_again_is_listed_once_with_her_new_programme(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20, name="Eve Again")
    enrollments.stop(
        services.db, done.enrollment_id, services.clock.now(), actor="test", reason="asked"
    )
    client.post(
        f"/staff/patients/{done.patient_id}/enrol",
        data=reenrol_form(10, services.clock.now().date()),
    )
    page = client.get("/staff/patients").text
    assert page.count(">Eve Again<") == 1
    assert ">Eve Again<" not in client.get("/staff/patients?status=stopped").text


# -- the patient page -------------------------------------------------------------------------


def test_the_patient_page_shows_open_alerts_first_notes_and_texts_to_go(
    client: StaffClient, services: Services
) -> None:
    done = enroll(services, weeks=20, name="Fay Example")
    routine = raise_for(services, done.patient_id, Severity.ROUTINE, "question")
    alerts.acknowledge(
        services.db, routine, services.clock.now(), actor="staff:1:a@x", note="Rang her back"
    )
    raise_for(services, done.patient_id, Severity.RED, "emergency")
    page = client.get(f"/staff/patients/{done.patient_id}").text
    assert page.index("Open alerts (1)") < page.index('<dl class="facts">')
    assert "emergency" in page[: page.index('<dl class="facts">')]
    assert "Rang her back" in page
    sms = next(r for r in pending(services, done.enrollment_id) if r.channel == "sms")
    text = services.renderer.render_sms(
        "leg-cramps", sms.step_key, Recipient("Fay", "en", False)
    ).body
    assert html.escape(text) in page
