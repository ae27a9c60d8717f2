"""Broadcasts to a cohort, through the outbox and the real send path (the dispatcher and the
deliverer, with the fake providers): consent decides who gets one, each patient's message
keeps her send window and her one message a day, STOP and a loss hold stop it, a new due date
leaves it alone, and it is cancellable until sent; a large one waits for a second member's
approval (never its author's); the cohort's filters pick the right patients. On SQLite and
PostgreSQL."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campaigns import broadcasts
from campaigns.bootstrap import Services
from campaigns.rules import broadcasts as rules
from campaigns.rules.broadcasts import Cohort, LeftOut, Purpose, Stage, Text
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import StateError
from campaigns.rules.replies import Inbound
from campaigns.rules.vocabulary import Channel, EddSource, EnrollmentStatus, StepKind
from campaigns.rules.window import zone
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.models import AuditEvent, Enrollment, Patient, ScheduledMessage
from campaigns.web.app import create_app
from tests.integration.helpers import edd_at, enroll, fake_email, fake_sms, phone_of
from tests.integration.staff import sign_in

AUTHOR = "staff:1:author@clinic.example"
_sids = count(1)


def sending(services: Services) -> broadcasts.Sending:
    return broadcasts.Sending(
        services.window,
        services.settings.default_timezone,
        services.settings.broadcast_approval_over,
    )


def draft(purpose: str = "service", **changes: Any) -> rules.Draft:
    values: dict[str, Any] = {
        "name": "Evening physio",
        "purpose": purpose,
        "status": ["active"],
        "channels": ["sms", "email"],
        "sms": "Evening physio classes start on Monday.",
        "subject": "Evening physio classes",
        "body": "Evening physio classes start on Monday.\n\nAsk us for a place.",
        **changes,
    }
    return rules.read_form(values, campaigns=["leg-cramps"], clinic_short_name="Santi")


def scheduled(services: Services, made: rules.Draft, send_at: datetime | None = None) -> int:
    now = services.clock.now()
    broadcast_id = broadcasts.create(services.db, made, now, actor=AUTHOR)
    broadcasts.schedule(services.db, sending(services), broadcast_id, send_at, now, actor=AUTHOR)
    return broadcast_id


def rows_of(services: Services, broadcast_id: int) -> list[ScheduledMessage]:
    with services.db.session() as session:
        return list(
            session.execute(
                select(ScheduledMessage)
                .where(ScheduledMessage.step_key == rules.step_key(broadcast_id))
                .order_by(ScheduledMessage.id)
            ).scalars()
        )


def patient_of(services: Services, row: ScheduledMessage) -> int:
    with services.db.session() as session:
        found = session.get(Enrollment, row.enrollment_id)
        assert found is not None
        return found.patient_id


def text_in(services: Services, phone: str, body: str) -> None:
    services.answerer.handle(Inbound(f"SMbc{next(_sids):028d}", phone, body), services.clock.now())


def run_until(services: Services, end: datetime) -> None:
    """Beat's dispatch every 30 minutes until `end` (the clock moves with it)."""
    assert isinstance(services.clock, MovableClock)
    while services.clock.now() < end:
        services.clock.advance(timedelta(minutes=30))
        tick(services, InlineQueue(services))


def test_a_broadcast_keeps_every_send_rule(services: Services) -> None:
    consents = "programme,marketing_sms,marketing_email"
    ann = enroll(services, weeks=20, name="Ann Example", consent=consents)
    bea = enroll(services, weeks=24, name="Bea Example", channels="sms", consent=consents)
    cat = enroll(services, weeks=26, name="Cat Example", channels="sms", consent=consents)
    dee = enroll(services, weeks=28, name="Dee Example", channels="sms")  # no offers
    eve = enroll(
        services,
        weeks=30,
        name="Eve Example",
        channels="sms",
        consent=consents,
        tz="America/New_York",
    )
    tick(services, InlineQueue(services))  # the welcomes go this morning: her day's message
    broadcast_id = scheduled(services, draft("marketing"))
    written = rows_of(services, broadcast_id)
    by_patient = {patient_of(services, r): r for r in written}
    assert set(by_patient) == {ann.patient_id, bea.patient_id, cat.patient_id, eve.patient_id}
    assert Counter(r.channel for r in written) == {"sms": 4, "email": 1}
    assert {r.kind for r in written} == {StepKind.MARKETING.value}

    text_in(services, phone_of(services, bea.patient_id), "STOP")
    text_in(services, phone_of(services, cat.patient_id), "we lost the baby yesterday")
    # A new due date re-plans her programme: the broadcast is no step of it.
    hers = [(r.id, r.status, r.due_at) for r in written if r.enrollment_id == ann.enrollment_id]
    services.enrollments.change_edd(
        ann.enrollment_id, edd_at(services.clock.now().date(), 21), EddSource.SCAN, actor="t"
    )
    assert [
        (r.id, r.status, r.due_at)
        for r in rows_of(services, broadcast_id)
        if r.enrollment_id == ann.enrollment_id
    ] == hers

    run_until(services, max(r.due_at for r in written) + timedelta(hours=1))
    after = {patient_of(services, r): r for r in rows_of(services, broadcast_id)}
    assert {
        p: (r.channel, r.status.value, r.reason) for p, r in after.items() if r.channel == "sms"
    } == {
        ann.patient_id: ("sms", "sent", None),
        bea.patient_id: ("sms", "cancelled", "opted_out"),
        cat.patient_id: ("sms", "cancelled", "loss_hold"),
        eve.patient_id: ("sms", "sent", None),
    }
    body = "Santi: Evening physio classes start on Monday. Reply STOP to end"
    got = {m.to for m in fake_sms(services).sent if m.body == body}
    assert got == {phone_of(services, ann.patient_id), phone_of(services, eve.patient_id)}
    [email] = [m for m in fake_email(services).sent if m.category == "broadcast"]
    assert "Hello Ann," in email.html and "Ask us for a place." in email.text
    _assert_window_and_daily_cap(services, {ann.patient_id, eve.patient_id, dee.patient_id})


def _assert_window_and_daily_cap(services: Services, patient_ids: set[int]) -> None:
    """Every message that went to these patients went in her window, one a local day (a
    step's text and email count as one)."""
    with services.db.session() as session:
        found = session.execute(
            select(Enrollment.patient_id, Patient.timezone, ScheduledMessage)
            .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(ScheduledMessage.sent_at.is_not(None), Enrollment.patient_id.in_(patient_ids))
        ).all()
    days: dict[tuple[int, date], set[str]] = {}
    for patient_id, timezone, row in found:
        assert row.sent_at is not None
        assert services.window.is_open(row.sent_at, zone(timezone)), row.step_key
        assert row.sent_at >= row.due_at
        local_day = row.sent_at.astimezone(zone(timezone)).date()
        days.setdefault((patient_id, local_day), set()).add(row.step_key)
    assert days and all(len(steps) == 1 for steps in days.values()), days


def test_cancelling_stops_what_has_not_gone_and_is_refused_once_all_went(
    services: Services,
) -> None:
    london = enroll(services, weeks=20, channels="sms")
    new_york = enroll(services, weeks=20, channels="sms", tz="America/New_York")
    first = scheduled(services, draft(channels=["sms"]))
    due = {patient_of(services, r): r.due_at for r in rows_of(services, first)}
    assert due[london.patient_id] < due[new_york.patient_id]  # her window opens later
    run_until(services, due[london.patient_id] + timedelta(minutes=30))
    done = broadcasts.cancel(services.db, first, services.clock.now(), actor=AUTHOR)
    assert (done.count, done.in_flight) == (1, [])
    statuses = {patient_of(services, r): r.status.value for r in rows_of(services, first)}
    assert statuses == {london.patient_id: "sent", new_york.patient_id: "cancelled"}
    with services.db.session() as session:
        listed = broadcasts.one(session, first)
    assert (listed.shown_status, listed.counts) == ("cancelled", rules.Counts(1, 0, 1))
    with pytest.raises(StateError, match="already cancelled"):
        broadcasts.cancel(services.db, first, services.clock.now(), actor=AUTHOR)

    gone = scheduled(services, draft(channels=["sms"], campaign="", name="All sent"))
    run_until(services, max(r.due_at for r in rows_of(services, gone)) + timedelta(hours=1))
    with pytest.raises(StateError, match="has been sent"):
        broadcasts.cancel(services.db, gone, services.clock.now(), actor=AUTHOR)
    with services.db.session() as session:
        actions = [
            e.action
            for e in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()
            if e.action.startswith("broadcast_")
        ]
    assert actions == [
        "broadcast_created",
        "broadcast_scheduled",
        "broadcast_cancelled",
        "broadcast_created",
        "broadcast_scheduled",
    ]


@pytest.fixture
def client(make_services: Any, database_url: str) -> Iterator[tuple[TestClient, Services]]:
    built: Services = make_services(database_url, broadcast_approval_over=1)
    with TestClient(
        create_app(built), base_url="https://testserver", follow_redirects=False
    ) as test_client:
        yield test_client, built


FORM = {
    "name": "Closed on Friday",
    "purpose": "service",
    "status": "active",
    "stage": "any",
    "channels": "sms",
    "sms": "The clinic is closed on Friday 6 March.",
}


def test_a_large_broadcast_waits_for_a_second_member(client: tuple[TestClient, Services]) -> None:
    http, services = client
    for _ in range(2):
        enroll(services, weeks=20, channels="sms")
    author = sign_in(http, services, "clinician")
    made = author.post("/staff/broadcasts", FORM)
    assert made.status_code == 303, made.text
    page_url = made.headers["location"]
    page = author.get(page_url).text
    assert "2 patients" in page and "Santi: The clinic is closed on Friday 6 March." in page
    asked = author.post(f"{page_url}/schedule", {"when": "now"})
    assert "another member must approve" in author.get(asked.headers["location"]).text
    refused = author.post(f"{page_url}/approve")
    assert "another member must approve it" in author.get(refused.headers["location"]).text
    broadcast_id = int(page_url.rsplit("/", 1)[1])
    assert rows_of(services, broadcast_id) == []

    http.cookies.clear()
    viewer = sign_in(http, services, "viewer")
    assert viewer.get(page_url).status_code == 200  # viewers read
    assert viewer.get("/staff/broadcasts/new").status_code == 403
    assert viewer.post(f"{page_url}/approve").status_code == 403

    http.cookies.clear()
    second = sign_in(http, services, "admin")
    approved = second.post(f"{page_url}/approve")
    assert "Approved and scheduled: 2 messages" in second.get(approved.headers["location"]).text
    assert len(rows_of(services, broadcast_id)) == 2
    listing = second.get("/staff/broadcasts").text
    assert "Closed on Friday" in listing and "scheduled" in listing
    with services.db.session() as session:
        trail = [
            (e.action, e.actor.split(":")[-1])
            for e in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()
            if e.action.startswith("broadcast_")
        ]
    assert trail == [
        ("broadcast_created", "clinician@clinic.example"),
        ("broadcast_approval_requested", "clinician@clinic.example"),
        ("broadcast_approved", "admin@clinic.example"),
    ]


def test_the_cohort_filters_pick_the_right_patients(services: Services) -> None:
    at_20 = enroll(services, weeks=20)
    at_30 = enroll(services, weeks=30, channels="sms")
    polish = enroll(services, weeks=30, channels="sms", language="pl")
    discreet = enroll(services, weeks=31, channels="sms", discreet="yes")
    paused = enroll(services, weeks=25, channels="sms")
    services.enrollments.pause(paused.enrollment_id, actor="t")
    born = enroll(services, weeks=39, channels="sms")
    today = services.clock.now().date()
    services.enrollments.record_birth(born.enrollment_id, today - timedelta(days=10), actor="t")
    with services.db.session() as session:
        # A second programme of hers (another clinic's campaign): one message all the same.
        session.add(
            Enrollment(
                patient_id=at_20.patient_id,
                campaign="second-programme",
                edd=date(2026, 7, 20),
                edd_source="scan",
                edd_set_at=services.clock.now(),
                channels="sms",
                status=EnrollmentStatus.ACTIVE,
                enrolled_at=services.clock.now(),
                enrolled_on=today,
                updated_at=services.clock.now(),
            )
        )

    def who(cohort: Cohort, words: str = "Closed on Friday.") -> tuple[set[int], Counter[LeftOut]]:
        text = Text(0, "test", f"Santi: {words}", None)
        with services.db.session() as session:
            found = broadcasts.audience(session.connection(), text, cohort, Purpose.SERVICE, today)
        return {send[0] for send in found.sends}, found.left_out

    sms = frozenset({Channel.SMS})
    everyone, _ = who(Cohort(sms))
    assert everyone == {
        at_20.patient_id,
        at_30.patient_id,
        polish.patient_id,
        discreet.patient_id,
        born.patient_id,
    }
    by_weeks = Cohort(sms, stage=Stage.PREGNANT, low=29, high=30)
    assert who(by_weeks)[0] == {at_30.patient_id, polish.patient_id}
    assert who(Cohort(sms, stage=Stage.PREGNANT, low=29, high=30, language="pl"))[0] == {
        polish.patient_id
    }
    assert who(Cohort(sms, stage=Stage.AFTER_BIRTH, low=7, high=14))[0] == {born.patient_id}
    paused_too = frozenset({EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED})
    assert paused.patient_id in who(Cohort(sms, statuses=paused_too))[0]
    assert who(Cohort(sms, campaign="second-programme"))[0] == {at_20.patient_id}
    near_term = Cohort(sms, stage=Stage.PREGNANT, low=30, high=31)
    assert who(near_term, "Pregnancy yoga is on.") == (
        {at_30.patient_id, polish.patient_id},
        Counter({LeftOut.DISCREET: 1}),
    )
    email_only = Cohort(frozenset({Channel.EMAIL}), stage=Stage.PREGNANT, low=29, high=31)
    assert who(email_only) == (set(), Counter({LeftOut.NOT_ON_CHANNEL: 3}))
