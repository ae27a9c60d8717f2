"""Patients' texts through the app: signed with the Twilio SDK's own validator, answered in
TwiML, stored once, and acted on (alerts, opt-out and back, loss, booking links, births)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from twilio.request_validator import RequestValidator

from campaigns import runtime
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.ports import RetryableError
from campaigns.storage.models import (
    Alert,
    AuditEvent,
    ConsentEvent,
    Enrollment,
    InboundMessage,
    Patient,
    Suppression,
)
from campaigns.web.app import create_app
from campaigns.web.webhooks import form_params, twilio_signed
from tests.integration.helpers import enroll, fake_email, phone_of, rows
from tests.integration.staff import StaffClient, sign_in

TOKEN = "test_auth_token_0123456789abcdef"
PUBLIC = "https://clinic.example"
SMS = "/webhooks/twilio/sms"
BOOKING = "https://book.example/physio?src=santi"
_sids = count(1)


@pytest.fixture
def app_services(make_services: object, database_url: str) -> Services:
    assert callable(make_services)
    made: Services = make_services(
        database_url,
        public_url=PUBLIC,
        twilio_auth_token=TOKEN,
        booking_url=BOOKING,
        alert_email="alerts@clinic.example",
    )
    return made


@pytest.fixture
def client(app_services: Services) -> Iterator[TestClient]:
    # https, as the public URL: staff cookies are Secure there.
    with TestClient(
        create_app(app_services), base_url="https://testserver", follow_redirects=False
    ) as test_client:
        yield test_client


@pytest.fixture
def clinician(client: TestClient, app_services: Services) -> StaffClient:
    return sign_in(client, app_services, "clinician")


@pytest.fixture
def operator(app_services: Services) -> Iterator[StaffClient]:
    with TestClient(
        create_app(app_services), base_url="https://testserver", follow_redirects=False
    ) as test_client:
        yield sign_in(test_client, app_services, "operator")


def after(staff: StaffClient, answer: Any) -> str:
    """The page a staff action sent the browser to, with the notice it left there."""
    assert answer.status_code == 303, answer.text
    return staff.get(answer.headers["location"]).text


def incoming(sender: str, body: str, sid: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid or f"SM{next(_sids):032d}",
        "AccountSid": "AC" + "a" * 32,
        "From": sender,
        "To": "+447700900000",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def post(client: TestClient, params: dict[str, str], *, signature: str | None = None) -> Any:
    body = urllib.parse.urlencode(params)
    if signature is None:
        signature = RequestValidator(TOKEN).compute_signature(PUBLIC + SMS, params)
    return client.post(
        SMS,
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )


def texts(response: Any) -> list[str]:
    """The <Message> bodies of a TwiML answer."""
    import xml.etree.ElementTree as ET

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.text)
    assert root.tag == "Response"
    return [m.text or "" for m in root.findall("Message")]


def say(client: TestClient, sender: str, body: str, **extra: str) -> list[str]:
    return texts(post(client, incoming(sender, body, **extra)))


def alerts_of(services: Services) -> list[Alert]:
    with services.db.session() as session:
        return list(session.execute(select(Alert).order_by(Alert.id)).scalars())


def pending_by_channel(services: Services, enrollment_id: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for row in rows(services, enrollment_id):
        if row.status == "pending":
            found[row.channel] = found.get(row.channel, 0) + 1
    return found


# --- the webhook itself -------------------------------------------------------------------


def test_a_wrong_or_missing_signature_is_refused_and_changes_nothing(
    client: TestClient, app_services: Services
) -> None:
    params = incoming("+447700900123", "STOP")
    assert post(client, params, signature="bm90IHRoZSBzaWduYXR1cmU=").status_code == 403
    assert post(client, params, signature="").status_code == 403
    other = RequestValidator("another_token_0123456789abcdef01").compute_signature(
        PUBLIC + SMS, params
    )
    assert post(client, params, signature=other).status_code == 403
    # signed for another URL (as if behind a proxy that changed the scheme)
    http = RequestValidator(TOKEN).compute_signature("http://clinic.example" + SMS, params)
    assert post(client, params, signature=http).status_code == 403
    with app_services.db.session() as session:
        assert session.execute(select(func.count()).select_from(InboundMessage)).scalar() == 0
        assert session.execute(select(func.count()).select_from(Suppression)).scalar() == 0


def test_the_providers_md_inbound_vector_validates() -> None:
    body = (
        "ToCountry=GB&ToState=&SmsMessageSid=SMdddddddddddddddddddddddddddddddd&NumMedia=0&"
        "ToCity=&FromZip=&SmsSid=SMdddddddddddddddddddddddddddddddd&FromState=&"
        "SmsStatus=received&FromCity=&Body=STOP&FromCountry=GB&To=%2B447700900000&"
        "MessagingServiceSid=MGcccccccccccccccccccccccccccccccc&ToZip=&NumSegments=1&"
        "MessageSid=SMdddddddddddddddddddddddddddddddd&AccountSid=ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "&From=%2B447700900123&ApiVersion=2010-04-01&OptOutType=STOP"
    )
    params = form_params(body.encode())
    url = "https://sms.example.org/twilio/inbound"
    assert twilio_signed(url, params, "u6Z/BBr/Gsbqyt57vmOSspKclB0=", TOKEN)
    assert not twilio_signed(url + "/", params, "u6Z/BBr/Gsbqyt57vmOSspKclB0=", TOKEN)


def test_a_replayed_message_has_no_second_effect(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    params = incoming(sender, "my leg is swollen")
    first = texts(post(client, params))
    assert first and "leg" in first[0]
    assert texts(post(client, params)) == []  # empty <Response/>: nothing sent twice
    with app_services.db.session() as session:
        assert session.execute(select(func.count()).select_from(InboundMessage)).scalar() == 1
    assert len(alerts_of(app_services)) == 1


def test_malformed_requests_get_a_4xx(client: TestClient) -> None:
    assert post(client, {"Body": "hello", "From": "+447700900123"}).status_code == 400
    assert post(client, {"MessageSid": "SM1", "Body": "hello"}).status_code == 400
    huge = incoming("+447700900123", "x" * 70_000)
    assert post(client, huge).status_code == 413


def test_an_unknown_number_gets_the_generic_answer_with_no_patient_data(
    client: TestClient, app_services: Services
) -> None:
    enroll(app_services, weeks=20, name="Jessica Example")
    [answer] = say(client, "+447700900999", "hello, who is this? Jessica")
    assert "Santi Clinic" in answer and "111" in answer and "999" in answer
    assert "Jessica" not in answer and "Example" not in answer
    with app_services.db.session() as session:
        stored = session.execute(select(InboundMessage)).scalar_one()
    assert stored.patient_id is None and stored.intent == "unrecognised"
    # Nothing unread is lost: staff see it (a review, not emailed).
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind, alert.email_due) == ("review", "unrecognised", False)


def test_an_unknown_number_with_a_danger_sign_gets_the_safety_answer_and_an_alert(
    client: TestClient, app_services: Services
) -> None:
    [answer] = say(client, "+447700900998", "I'm bleeding a lot")
    assert "maternity unit" in answer and "999" in answer
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind, alert.patient_id) == ("red", "maternity", None)


def test_an_empty_body_and_a_10_kb_body(client: TestClient, app_services: Services) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    [answer] = say(client, sender, "")
    assert "could not read your message" in answer
    long_text = "blah " * 2_000 + "and now my calf is hot"
    assert len(long_text) > 10_000
    [answer] = say(client, sender, long_text)
    assert "maternity unit, GP or 111 today" in answer
    with app_services.db.session() as session:
        stored = session.execute(
            select(InboundMessage).order_by(InboundMessage.id.desc()).limit(1)
        ).scalar_one()
    assert stored.body == long_text and stored.tier == "amber"


# --- safety --------------------------------------------------------------------------------


def test_a_danger_sign_gets_the_safety_answer_an_alert_an_email_and_a_marketing_hold(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20, consent="programme,marketing_sms,marketing_email")
    sender = phone_of(app_services, done.patient_id)
    answers = say(client, sender, "my leg is swollen and warm, can I book in?")
    assert len(answers) == 1
    assert "GP or 111" in answers[0]
    assert "/b/" not in answers[0] and "book" not in answers[0].lower()
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind, alert.patient_id) == ("amber", "leg", done.patient_id)
    assert "leg + swollen" in alert.matched and alert.acknowledged_at is None
    with app_services.db.session() as session:
        patient = session.get(Patient, done.patient_id)
        assert patient is not None and patient.marketing_hold_until is not None
        assert patient.marketing_hold_until - app_services.clock.now() == timedelta(days=30)
        stored = session.execute(select(InboundMessage)).scalar_one()
        assert stored.intent == "leg" and stored.tier == "amber"
        assert {m["intent"] for m in stored.matched["matches"]} == {"leg", "book"}
        assert stored.actions == ["alert", "marketing_hold"]
        audited = session.execute(
            select(AuditEvent.action, AuditEvent.detail).where(
                AuditEvent.patient_id == done.patient_id
            )
        ).all()
        assert {"reply_received", "alert_raised", "marketing_held"} <= {a for a, _ in audited}
        assert not any("swollen" in str(detail) for _, detail in audited)  # never the text
    # The alert email goes on the next beat tick, once, without the text in it.
    email = fake_email(app_services)
    assert runtime.email_alerts(app_services) == 1
    assert runtime.email_alerts(app_services) == 0
    [sent] = [m for m in email.sent if m.to == "alerts@clinic.example"]
    assert sent.subject.startswith("[AMBER]") and "swollen" not in sent.subject
    assert "swollen" not in sent.text and sender not in sent.text
    assert f"/staff/alerts/{alert.id}" in sent.text


def test_a_red_emergency_answer_says_999_and_promises_no_call_back(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=30)
    [answer] = say(client, phone_of(app_services, done.patient_id), "chest pain and cant breathe")
    assert "999" in answer and "do not wait for us" in answer
    assert "call you" not in answer.lower()
    assert alerts_of(app_services)[0].severity == "red"


def test_marketing_is_held_for_30_days_after_a_safety_answer(
    client: TestClient, app_services: Services, clock: MovableClock
) -> None:
    done = enroll(app_services, weeks=35, consent="programme,marketing_sms,marketing_email")
    say(client, phone_of(app_services, done.patient_id), "my calf hurts and is red")
    marketing = [r for r in rows(app_services, done.enrollment_id) if r.kind == "marketing"]
    assert marketing, "the plan should hold the physio offer within the horizon"
    clock.advance(timedelta(days=8))
    with app_services.db.session() as session:
        session.execute(
            text("UPDATE scheduled_messages SET next_attempt_at = :now WHERE kind = 'marketing'"),
            {"now": clock.now() - timedelta(seconds=1)},
        )
    runtime.tick(app_services, runtime.InlineQueue(app_services))
    statuses = {(r.kind, r.status, r.reason) for r in rows(app_services, done.enrollment_id)}
    assert ("marketing", "cancelled", "safety_hold") in statuses
    assert not any(k == "marketing" and s in ("sent", "delivered") for k, s, _ in statuses)


# --- loss, opt-out and back ------------------------------------------------------------------


def test_a_loss_told_in_a_text_holds_everything_until_staff_confirm_it(
    client: TestClient, clinician: StaffClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    assert pending_by_channel(app_services, done.enrollment_id)
    [answer] = say(client, sender, "I had a miscarriage yesterday")
    assert "so sorry" in answer and "stopped these messages" in answer
    assert pending_by_channel(app_services, done.enrollment_id) == {}
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.status == "loss_hold"
        stored = session.execute(select(InboundMessage)).scalar_one()
        assert stored.intent == "loss" and stored.actions == ["alert", "loss_hold"]
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind, alert.email_due) == ("amber", "loss", True)
    # START while held plans nothing: only staff lift a hold.
    say(client, sender, "START")
    assert pending_by_channel(app_services, done.enrollment_id) == {}
    page = clinician.get(f"/staff/alerts/{alert.id}")
    assert "Confirm the loss" in page.text and "clear the hold" in page.text
    # Closing it without a decision would leave her held with nothing to show it.
    assert ">Acknowledge<" not in page.text
    plain = clinician.post(f"/staff/alerts/{alert.id}/acknowledge")
    assert "waiting for a decision" in after(clinician, plain)
    confirmed = clinician.post(f"/staff/alerts/{alert.id}/confirm-loss")
    assert "Loss confirmed" in after(clinician, confirmed)
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.status == "ended_loss"
    assert alerts_of(app_services)[0].acknowledged_by == "staff:1:clinician@clinic.example"
    again = clinician.post(f"/staff/alerts/{alert.id}/clear-loss-hold")
    assert "already acknowledged" in after(clinician, again)


def test_staff_clear_a_loss_hold_and_messages_resume_from_now(
    client: TestClient, clinician: StaffClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    before = {r.step_key for r in rows(app_services, done.enrollment_id) if r.status == "pending"}
    say(client, phone_of(app_services, done.patient_id), "we lost our baby on friday")
    [alert] = alerts_of(app_services)
    cleared = clinician.post(f"/staff/alerts/{alert.id}/clear-loss-hold")
    assert "Loss hold cleared" in after(clinician, cleared)
    resumed = {r.step_key for r in rows(app_services, done.enrollment_id) if r.status == "pending"}
    assert resumed == before
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.status == "active"
        actions = set(session.execute(select(AuditEvent.action)).scalars())
    assert {"loss_hold", "loss_hold_cleared", "alert_acknowledged"} <= actions


@pytest.mark.parametrize(
    "text",
    [
        "I had a miscarriage last year so I'm nervous",
        "is leg cramp a sign of miscarriage?",
        "my sister had a stillbirth",
        "not a miscarriage thank god",
    ],
)
def test_a_mention_of_loss_changes_nothing_and_goes_to_staff(
    client: TestClient, app_services: Services, text: str
) -> None:
    done = enroll(app_services, weeks=20)
    before = pending_by_channel(app_services, done.enrollment_id)
    [answer] = say(client, phone_of(app_services, done.patient_id), text)
    assert "sorry" not in answer and "our team will read" in answer and "999" in answer
    assert pending_by_channel(app_services, done.enrollment_id) == before
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.status == "active"
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind) == ("review", "loss_mention")


def test_danger_and_loss_from_unknown_and_opted_out_numbers_reach_staff_by_email(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    opted_out = phone_of(app_services, done.patient_id)
    say(client, opted_out, "STOP")
    [safety] = say(client, "+447700900991", "my waters have gone")
    assert "maternity unit" in safety
    assert "999" in say(client, opted_out, "chest pain")[0]
    assert say(client, opted_out, "we lost the baby") == []  # no answer after STOP
    [generic] = say(client, "+447700900992", "hello who is this")
    assert "maternity unit" in generic and "999" in generic
    found = [(a.severity, a.kind, a.email_due) for a in alerts_of(app_services)]
    assert found == [
        ("red", "maternity", True),
        ("red", "emergency", True),
        ("amber", "loss", True),
        ("review", "unrecognised", False),
    ]
    assert runtime.email_alerts(app_services) == 3
    subjects = [m.subject for m in fake_email(app_services).sent]
    assert sum(s.startswith("[RED]") for s in subjects) == 2
    assert sum(s.startswith("[AMBER]") for s in subjects) == 1


def test_a_text_in_another_language_that_no_list_reads_is_emailed_to_staff(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    [answer] = say(client, phone_of(app_services, done.patient_id), "dziękuję, mam pytanie")
    assert "maternity unit" in answer and "999" in answer
    [alert] = alerts_of(app_services)
    assert (alert.severity, alert.kind, alert.email_due) == ("amber", "unreadable", True)
    assert runtime.email_alerts(app_services) == 1
    # A danger sign in a shipped language is read, whatever language she enrolled with.
    [safety] = say(client, phone_of(app_services, done.patient_id), "krwawię")
    assert "maternity unit" in safety
    assert alerts_of(app_services)[-1].severity == "red"


def test_stop_cancels_pending_texts_answers_once_and_then_only_safety_start_and_help(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    before = pending_by_channel(app_services, done.enrollment_id)
    assert before.get("sms") and before.get("email")
    [confirmation] = say(client, sender, "STOP!!")
    assert "unsubscribed" in confirmation and "START" in confirmation
    after = pending_by_channel(app_services, done.enrollment_id)
    assert "sms" not in after and after["email"] == before["email"]
    with app_services.db.session() as session:
        [event] = session.execute(
            select(ConsentEvent).where(ConsentEvent.source == "keyword")
        ).scalars()
        assert (event.granted, event.channel, event.actor) == (False, "sms", "patient:sms")
        assert session.execute(select(func.count()).select_from(Suppression)).scalar() == 1
    assert say(client, sender, "stop") == []  # one confirmation only
    assert say(client, sender, "BOOK") == []
    assert say(client, sender, "thanks") == []
    assert "maternity unit, GP or 111 today" in say(client, sender, "leg swollen")[0]
    assert "Reply STOP to end" in say(client, sender, "HELP")[0]
    with app_services.db.session() as session:
        withdrawals = session.execute(
            select(func.count()).select_from(ConsentEvent).where(ConsentEvent.granted.is_(False))
        ).scalar()
    assert withdrawals == 1
    # YES after an opt-out re-subscribes: consent granted, suppression lifted, texts planned.
    [welcome] = say(client, sender, "Yes")
    assert "subscribed again" in welcome
    assert pending_by_channel(app_services, done.enrollment_id).get("sms")
    with app_services.db.session() as session:
        assert session.execute(select(func.count()).select_from(Suppression)).scalar() == 0
        latest = session.execute(
            select(ConsentEvent).order_by(ConsentEvent.id.desc()).limit(1)
        ).scalar_one()
        assert (latest.granted, latest.source, latest.channel) == (True, "keyword", "sms")


def test_twilio_advanced_opt_out_is_applied_without_a_second_answer(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    assert say(client, sender, "STOP", OptOutType="STOP") == []
    assert "sms" not in pending_by_channel(app_services, done.enrollment_id)
    assert say(client, sender, "START", OptOutType="START") == []
    assert pending_by_channel(app_services, done.enrollment_id).get("sms")


def test_the_consent_ledger_is_append_only(app_services: Services) -> None:
    enroll(app_services, weeks=20)
    for statement in (
        "UPDATE consent_events SET granted = NOT granted",
        "DELETE FROM consent_events",
    ):
        with (
            pytest.raises(DBAPIError, match="append-only"),
            app_services.db.session() as session,
        ):
            session.execute(text(statement))
    with app_services.db.session() as session:
        assert session.execute(select(func.count()).select_from(ConsentEvent)).scalar() == 1


# --- booking links ---------------------------------------------------------------------------


def test_book_gets_a_signed_link_that_redirects_and_is_recorded(
    client: TestClient, app_services: Services, clock: MovableClock
) -> None:
    done = enroll(app_services, weeks=20)
    [answer] = say(client, phone_of(app_services, done.patient_id), "Book pls")
    link = next(word for word in answer.split() if "/b/" in word)
    assert link.startswith(PUBLIC + "/b/")
    path = urllib.parse.urlsplit(link).path
    response = client.get(path)
    assert response.status_code == 303
    target = urllib.parse.urlsplit(response.headers["location"])
    query = dict(urllib.parse.parse_qsl(target.query))
    assert target.netloc == "book.example" and target.path == "/physio"
    assert query == {
        "src": "santi",
        "utm_source": "santi-sms",
        "utm_medium": "sms",
        "utm_campaign": "leg-cramps",
    }
    with app_services.db.session() as session:
        clicks = session.execute(
            select(AuditEvent).where(AuditEvent.action == "booking_link_clicked")
        ).scalars()
        assert [c.patient_id for c in clicks] == [done.patient_id]
    # Tampered: a friendly page with the clinic's phone, never a redirect.
    tampered = client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
    assert tampered.status_code == 400 and "020 7946 0000" in tampered.text
    assert "location" not in tampered.headers
    clock.advance(timedelta(days=14, minutes=1))
    expired = client.get(path)
    assert expired.status_code == 410 and "expired" in expired.text


def test_book_within_24_hours_of_a_safety_alert_gets_the_safety_answer_again(
    client: TestClient, app_services: Services, clock: MovableClock
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    say(client, sender, "my calf is red n hot")
    clock.advance(timedelta(hours=23))
    [answer] = say(client, sender, "BOOK")
    assert "maternity unit, GP or 111 today" in answer and "/b/" not in answer
    assert [a.kind for a in alerts_of(app_services)] == ["leg", "book_after_safety"]
    clock.advance(timedelta(hours=2))
    [answer] = say(client, sender, "BOOK")
    assert "/b/" in answer


# --- unsubscribe links -----------------------------------------------------------------------


def test_one_click_unsubscribe_is_idempotent(client: TestClient, app_services: Services) -> None:
    done = enroll(app_services, weeks=20)
    url = app_services.links.unsubscribe_url(done.patient_id, 1)
    path = urllib.parse.urlsplit(url).path
    page = client.get(path)
    assert page.status_code == 200 and "Stop our emails?" in page.text
    assert pending_by_channel(app_services, done.enrollment_id).get("email")
    for _ in range(2):
        response = client.post(path, content="List-Unsubscribe=One-Click")
        assert response.status_code == 200 and "no more emails" in response.text
    assert "email" not in pending_by_channel(app_services, done.enrollment_id)
    assert pending_by_channel(app_services, done.enrollment_id).get("sms")
    with app_services.db.session() as session:
        events = session.execute(
            select(ConsentEvent).where(ConsentEvent.source == "link")
        ).scalars()
        assert [(e.channel, e.granted) for e in events] == [("email", False)]
        suppressed = session.execute(select(Suppression.channel)).scalars()
        assert list(suppressed) == ["email"]
    bad = client.post("/u/not-a-token")
    assert bad.status_code == 400 and "020 7946 0000" in bad.text


# --- births ----------------------------------------------------------------------------------


def test_a_birth_is_asked_for_its_date_and_staff_confirm_it(
    client: TestClient, clinician: StaffClient, app_services: Services, clock: MovableClock
) -> None:
    done = enroll(app_services, weeks=39)
    sender = phone_of(app_services, done.patient_id)
    [question] = say(client, sender, "baby arrived!!")
    assert "birth date" in question
    today = clock.now().date()
    yesterday = today - timedelta(days=1)
    [thanks] = say(client, sender, yesterday.strftime("%d/%m"))
    assert "check the date" in thanks
    [alert] = alerts_of(app_services)
    assert (alert.kind, alert.severity) == ("born", "routine")
    assert alert.detail["birth_date"] == yesterday.isoformat()
    assert alert.email_due is False  # routine: the inbox, not the alert address
    page = clinician.get(f"/staff/alerts/{alert.id}")
    assert page.status_code == 200 and yesterday.isoformat() in page.text
    confirmed = clinician.post(
        f"/staff/alerts/{alert.id}/confirm-birth", data={"birth_date": yesterday.isoformat()}
    )
    assert "Birth recorded" in after(clinician, confirmed)
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.birth_date == yesterday
    assert alerts_of(app_services)[0].acknowledged_by == "staff:1:clinician@clinic.example"
    steps = {r.step_key for r in rows(app_services, done.enrollment_id) if r.status == "pending"}
    assert "after-birth-safety" in steps


# --- staff inbox and metrics ----------------------------------------------------------------


def test_the_inbox_lists_open_alerts_most_urgent_first_until_acknowledged(
    client: TestClient, clinician: StaffClient, operator: StaffClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    say(client, sender, "what time is my appointment on tuesday, thanks")  # review (not BOOK)
    say(client, sender, "hello??")  # review
    say(client, sender, "headache and blurry vision")  # amber
    say(client, "+447700900997", "can't breathe")  # red, unknown number
    inbox = clinician.get("/staff/alerts")
    assert inbox.status_code == 200
    order = [inbox.text.index(s) for s in ("RED", "AMBER", "REVIEW")]
    assert order == sorted(order)
    metrics = operator.get("/metrics").text
    assert 'campaigns_alerts_open{severity="red"} 1' in metrics
    assert 'campaigns_alerts_open{severity="amber"} 1' in metrics
    assert 'campaigns_alerts_open{severity="review"} 2' in metrics
    red = next(a for a in alerts_of(app_services) if a.severity == "red")
    ack = clinician.post(f"/staff/alerts/{red.id}/acknowledge", data={"note": "called 999"})
    assert ack.status_code == 303
    again = clinician.post(f"/staff/alerts/{red.id}/acknowledge")
    assert "already acknowledged" in after(clinician, again)
    assert 'campaigns_alerts_open{severity="red"} 0' in operator.get("/metrics").text
    patient_page = clinician.get(f"/staff/patients/{done.patient_id}")
    assert "headache and blurry vision" in patient_page.text
    assert "Consent ledger" in patient_page.text


def test_a_failure_while_handling_still_sends_the_safety_answer(
    client: TestClient, app_services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("database went away")

    done = enroll(app_services, weeks=20)
    sender = phone_of(app_services, done.patient_id)
    monkeypatch.setattr(app_services.answerer, "handle", broken)
    # Nothing was done, so nothing is confirmed: the safety answer only, no "unsubscribed".
    assert say(client, sender, "STOP texting me, I'm bleeding heavily") == [
        app_services.renderer.render_reply("maternity_bleeding", "en").body
    ]
    [answer] = say(client, sender, "what?")
    assert "111" in answer and "999" in answer
    # Staff see both texts as alerts, the bleeding one RED.
    found = [(a.severity, a.kind, a.patient_id) for a in alerts_of(app_services)]
    assert found == [
        ("red", "handling_failed", done.patient_id),
        ("review", "handling_failed", done.patient_id),
    ]
    with app_services.db.session() as session:
        stored = session.execute(select(InboundMessage).order_by(InboundMessage.id)).scalars()
        assert [m.actions for m in stored] == [["handling_failed"], ["handling_failed"]]


def test_only_an_open_birth_alert_can_confirm_a_birth(
    client: TestClient, clinician: StaffClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    say(client, phone_of(app_services, done.patient_id), "leg swollen")
    [alert] = alerts_of(app_services)
    refused = clinician.post(
        f"/staff/alerts/{alert.id}/confirm-birth",
        data={"birth_date": app_services.clock.now().date().isoformat()},
    )
    assert "not a birth" in after(clinician, refused)
    with app_services.db.session() as session:
        enrollment = session.get(Enrollment, done.enrollment_id)
        assert enrollment is not None and enrollment.birth_date is None


def test_an_alert_email_that_fails_goes_on_the_next_sweep(
    client: TestClient, app_services: Services
) -> None:
    done = enroll(app_services, weeks=20)
    say(client, phone_of(app_services, done.patient_id), "chest pain")
    fake_email(app_services).fail_next(RetryableError("503", "try later"))
    assert runtime.email_alerts(app_services) == 0
    [alert] = alerts_of(app_services)
    assert alert.emailed_at is None and alert.email_claimed_at is None  # free for the next sweep
    assert runtime.email_alerts(app_services) == 1
    assert alerts_of(app_services)[0].emailed_at is not None
    assert runtime.email_alerts(app_services) == 0
