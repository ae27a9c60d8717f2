"""The conversation inbox: texts from patients and unknown numbers, newest first, unread until
handled; staff replies through the outbox and the normal send path (so STOP, consent, a loss
hold and the send window stop them); linking an unknown number; wrong numbers; roles."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from campaigns import inbox
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.consent import WORDING_VERSION
from campaigns.rules.replies import Inbound
from campaigns.runtime import InlineQueue, tick
from campaigns.storage.models import (
    AuditEvent,
    ConsentEvent,
    Conversation,
    InboundMessage,
    ScheduledMessage,
    StaffReply,
)
from campaigns.web.app import create_app
from tests.integration.helpers import enroll, fake_sms, phone_of
from tests.integration.staff import StaffClient, sign_in

_sids = count(1)
UNKNOWN = "+447700900555"


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(
        create_app(services), base_url="https://testserver", follow_redirects=False
    ) as test_client:
        yield test_client


@pytest.fixture
def clinician(client: TestClient, services: Services) -> StaffClient:
    return sign_in(client, services, "clinician")


def text_in(services: Services, sender: str, body: str) -> None:
    """A text arrives (what the webhook does after checking Twilio's signature)."""
    services.answerer.handle(
        Inbound(f"SMinbox{next(_sids):025d}", sender, body), services.clock.now()
    )


def send_due(services: Services) -> int:
    return tick(services, InlineQueue(services))


def conversation_of(services: Services, *, patient_id: int | None = None) -> Conversation:
    with services.db.session() as session:
        query = select(Conversation)
        if patient_id is not None:
            query = query.where(Conversation.patient_id == patient_id)
        else:
            query = query.where(Conversation.patient_id.is_(None))
        found = session.execute(query).scalar_one()
        session.expunge(found)
        return found


def staff_replies(services: Services) -> list[ScheduledMessage]:
    with services.db.session() as session:
        return list(
            session.execute(
                select(ScheduledMessage)
                .where(ScheduledMessage.kind == "staff_reply")
                .order_by(ScheduledMessage.id)
            ).scalars()
        )


def audits(services: Services, action: str) -> list[AuditEvent]:
    with services.db.session() as session:
        return list(
            session.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        )


def sent_to(services: Services, phone: str) -> list[str]:
    return [m.body for m in fake_sms(services).sent if m.to == phone]


def after(staff: StaffClient, answer: Any) -> str:
    """The page an action sent the browser to, with the notice it left there."""
    assert answer.status_code == 303, answer.text
    return staff.get(answer.headers["location"]).text


def form_key(page: str) -> str:
    found = re.search(r'name="form_key" value="([0-9a-f]+)"', page)
    assert found, "the conversation has no reply form"
    return found.group(1)


def reply(
    staff: StaffClient, conversation_id: int, words: str, **fields: str
) -> Any:  # the response
    page = staff.get(f"/staff/inbox/{conversation_id}").text
    data = {"reply": words, "form_key": form_key(page), **fields}
    return staff.post(f"/staff/inbox/{conversation_id}/reply", data)


def names_in_order(page: str, *names: str) -> list[int]:
    return [page.index(name) for name in names]


# --- listing and state ----------------------------------------------------------------------


def test_the_inbox_lists_patients_and_unknown_numbers_newest_first_with_their_state(
    services: Services, clinician: StaffClient, clock: MovableClock
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace")
    bea = enroll(services, weeks=22, name="Bea Example")
    text_in(services, phone_of(services, ada.patient_id), "thanks for the tips")
    clock.advance(timedelta(minutes=1))
    text_in(services, UNKNOWN, "who is this please")
    clock.advance(timedelta(minutes=1))
    text_in(services, phone_of(services, bea.patient_id), "my calf is red n hot")
    clock.advance(timedelta(minutes=1))
    text_in(services, phone_of(services, ada.patient_id), "another question")

    page = clinician.get("/staff/inbox").text
    # Newest first: Ada (her second text), Bea, then the unknown number; one row each.
    positions = names_in_order(page, "Ada Lovelace", "Bea Example", "Unknown number")
    assert positions == sorted(positions)
    assert page.count("Ada Lovelace") == 1
    assert "another question" in page and "thanks for the tips" not in page
    assert page.count(">Unread<") == 3
    # How Bea's text was read and what we answered.
    assert "RED" in page or "AMBER" in page
    bea_text = conversation_of(services, patient_id=bea.patient_id)
    with services.db.session() as session:
        last = session.get(InboundMessage, bea_text.last_inbound_id)
        assert last is not None and last.replies
        assert last.replies[0]["text"][:40] in page

    # Handled: shown so, and gone from the unread view; a new text makes it unread again.
    done = clinician.post(f"/staff/inbox/{bea_text.id}/handled")
    assert "Conversation marked handled" in after(clinician, done)
    handled = conversation_of(services, patient_id=bea.patient_id)
    assert handled.handled_through == handled.last_inbound_id
    assert handled.handled_by is not None and "clinician@clinic.example" in handled.handled_by
    page = clinician.get("/staff/inbox").text
    assert page.count(">Unread<") == 2 and page.count(">Handled<") == 1
    unread = clinician.get("/staff/inbox?show=unread").text
    assert "Bea Example" not in unread and "Ada Lovelace" in unread
    [event] = audits(services, "conversation_handled")
    assert event.actor.endswith("clinician@clinic.example")
    assert event.patient_id == bea.patient_id

    clock.advance(timedelta(minutes=1))
    text_in(services, phone_of(services, bea.patient_id), "it is still sore")
    assert "Bea Example" in clinician.get("/staff/inbox?show=unread").text


def test_the_conversation_shows_her_texts_our_answers_and_our_messages_in_time_order(
    services: Services, clinician: StaffClient, clock: MovableClock
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace", channels="sms", email="")
    assert send_due(services) >= 1  # her welcome text goes
    [welcome] = sent_to(services, phone_of(services, ada.patient_id))
    clock.advance(timedelta(minutes=5))
    text_in(services, phone_of(services, ada.patient_id), "HELP")
    conversation = conversation_of(services, patient_id=ada.patient_id)
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert welcome in page
    assert "HELP" in page and "Automatic answer" in page
    assert page.index(welcome) < page.index("Automatic answer")
    # Opening her texts is audited, as opening her record is.
    [viewed] = [e for e in audits(services, "patient_viewed") if e.detail["page"] == "conversation"]
    assert viewed.patient_id == ada.patient_id


# --- replies --------------------------------------------------------------------------------


def test_a_reply_is_an_outbox_row_the_normal_send_path_sends(
    services: Services, clinician: StaffClient
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace", channels="sms", email="")
    phone = phone_of(services, ada.patient_id)
    send_due(services)
    text_in(services, phone, "can someone call me about my legs")
    conversation = conversation_of(services, patient_id=ada.patient_id)

    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    key = form_key(page)
    answer = clinician.post(
        f"/staff/inbox/{conversation.id}/reply",
        {"reply": "We will call you  this afternoon.", "form_key": key},
    )
    assert "it goes out within a minute" in after(clinician, answer)
    [row] = staff_replies(services)
    assert (row.status, row.channel, row.body) == (
        "pending",
        "sms",
        "Santi: We will call you this afternoon.",
    )
    assert row.enrollment_id == ada.enrollment_id and row.expires_at is not None
    # Sent twice (a double click): still one row.
    again = clinician.post(
        f"/staff/inbox/{conversation.id}/reply",
        {"reply": "We will call you  this afternoon.", "form_key": key},
    )
    assert "already sent once" in after(clinician, again)
    assert len(staff_replies(services)) == 1

    assert send_due(services) == 1
    assert sent_to(services, phone)[-1] == "Santi: We will call you this afternoon."
    [row] = staff_replies(services)
    assert row.status == "sent" and row.provider_id
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert "Staff reply by clinician@clinic.example" in page
    assert "Santi: We will call you this afternoon." in page
    # Replying handled the conversation; the audit names who, never the words.
    assert not inbox.is_unread(conversation_of(services, patient_id=ada.patient_id))
    [event] = audits(services, "staff_reply")
    assert event.actor.endswith("clinician@clinic.example") and event.message_id == row.id
    assert event.detail["outside_window"] is False
    assert "afternoon" not in str(event.detail)


def _withdraw_sms_consent(services: Services, patient_id: int) -> None:
    """Consent withdrawn as staff record it from a phone call: only the ledger changes."""
    with services.db.session() as session:
        session.add(
            ConsentEvent(
                patient_id=patient_id,
                purpose="programme",
                channel="sms",
                granted=False,
                occurred_at=services.clock.now(),
                source="staff",
                wording_version=WORDING_VERSION,
                actor="test",
            )
        )


@pytest.mark.parametrize(
    ("what", "why"),
    [
        ("stop", "She texted STOP"),
        ("loss", "pregnancy loss"),
        ("consent", "has not agreed to texts, or withdrew"),
    ],
)
def test_a_reply_is_refused_after_stop_a_loss_or_consent_withdrawn(
    services: Services, clinician: StaffClient, what: str, why: str
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace")
    phone = phone_of(services, ada.patient_id)
    send_due(services)
    text_in(services, phone, "hello")
    if what == "stop":
        text_in(services, phone, "STOP")
    elif what == "loss":
        text_in(services, phone, "the scan showed there was no heartbeat")
    else:
        _withdraw_sms_consent(services, ada.patient_id)
    conversation = conversation_of(services, patient_id=ada.patient_id)
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert "We cannot text her" in page and why in page
    assert 'name="form_key"' not in page  # no reply box to type into
    before = len(fake_sms(services).sent)
    refused = clinician.post(
        f"/staff/inbox/{conversation.id}/reply", {"reply": "Are you all right?"}
    )
    assert refused.status_code == 400
    assert why in refused.text
    assert staff_replies(services) == []
    send_due(services)
    assert len(fake_sms(services).sent) == before


@pytest.mark.parametrize("what", ["stop", "loss", "consent"])
def test_a_reply_waiting_for_the_window_is_never_sent_after_stop_a_loss_or_consent_withdrawn(
    services: Services, client: TestClient, clock: MovableClock, what: str
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace")
    phone = phone_of(services, ada.patient_id)
    send_due(services)
    text_in(services, phone, "hello")
    clock.set(clock.now().replace(hour=21))  # 21:00 in London: the window is shut
    clinician = sign_in(client, services, "clinician")
    conversation = conversation_of(services, patient_id=ada.patient_id)
    answer = reply(clinician, conversation.id, "We will call you tomorrow morning.")
    assert "The send window is shut" in after(clinician, answer)
    assert send_due(services) >= 0
    [row] = staff_replies(services)
    assert row.status == "pending"
    if what == "stop":
        text_in(services, phone, "STOP")
    elif what == "loss":
        text_in(services, phone, "the scan showed there was no heartbeat")
    else:
        # Only the ledger changes: the send path itself must find it at the go-ahead.
        _withdraw_sms_consent(services, ada.patient_id)
    clock.advance(timedelta(hours=13))  # Tuesday 10:00: the window is open
    send_due(services)
    assert "Santi: We will call you tomorrow morning." not in sent_to(services, phone)
    [row] = staff_replies(services)
    assert row.status == "cancelled"
    clinician = StaffClient(client, clinician.email)  # signed in again the next morning
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert ">cancelled<" in page  # the staff see it did not go, and why
    assert re.search(r'class="why">[^<]+', page)


def test_a_reply_longer_than_one_text_is_refused_with_a_clear_message(
    services: Services, clinician: StaffClient
) -> None:
    ada = enroll(services, weeks=20)
    text_in(services, phone_of(services, ada.patient_id), "hello")
    conversation = conversation_of(services, patient_id=ada.patient_id)
    too_long = "x" * 154  # 7 more with "Santi: " in front: 161
    refused = reply(clinician, conversation.id, too_long)
    assert refused.status_code == 400
    assert "Error: Too long for one text: 161 characters of 160" in refused.text
    assert too_long in refused.text  # what they typed is still there to shorten
    emoji = "Thank you 😊 " * 6
    refused = reply(clinician, conversation.id, emoji)
    assert refused.status_code == 400 and "only 70 characters" in refused.text
    empty = reply(clinician, conversation.id, "   ")
    assert empty.status_code == 400 and "Write the reply first" in empty.text
    assert staff_replies(services) == []
    fits = reply(clinician, conversation.id, "x" * 153)
    assert fits.status_code == 303 and len(staff_replies(services)) == 1


def test_outside_the_window_a_reply_waits_unless_a_clinician_sends_it_now(
    services: Services, client: TestClient, clock: MovableClock
) -> None:
    ada = enroll(services, weeks=20, channels="sms", email="")
    phone = phone_of(services, ada.patient_id)
    send_due(services)
    text_in(services, phone, "my leg is swollen")
    clock.set(clock.now().replace(hour=21))
    clinician = sign_in(client, services, "clinician")
    conversation = conversation_of(services, patient_id=ada.patient_id)
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert "The send window is shut now" in page and 'name="outside_window"' in page

    waits = reply(clinician, conversation.id, "We will call you in the morning.")
    assert "goes when it opens: Tue 03 Mar 2026 09:00 GMT" in after(clinician, waits)
    send_due(services)
    assert "Santi: We will call you in the morning." not in sent_to(services, phone)

    now = reply(clinician, conversation.id, "Please call 111 now.", outside_window="yes")
    assert "outside the send window, as you asked" in after(clinician, now)
    send_due(services)
    assert sent_to(services, phone)[-1] == "Santi: Please call 111 now."
    waiting, urgent = staff_replies(services)
    assert (waiting.status, urgent.status) == ("pending", "sent")
    with services.db.session() as session:
        recorded = session.get(StaffReply, urgent.id)
        assert recorded is not None and recorded.outside_window
        assert recorded.author.endswith("clinician@clinic.example")
    event = audits(services, "staff_reply")[-1]
    assert event.detail["outside_window"] is True
    assert event.actor.endswith("clinician@clinic.example")
    page = clinician.get(f"/staff/inbox/{conversation.id}").text
    assert "sent outside the send window" in page and "waiting for the send window" in page

    # A viewer may read but neither reply nor set the window aside.
    viewer = sign_in(client, services, "viewer")
    seen = viewer.get(f"/staff/inbox/{conversation.id}")
    assert seen.status_code == 200 and 'name="form_key"' not in seen.text
    refused = viewer.post(
        f"/staff/inbox/{conversation.id}/reply",
        {"reply": "hello", "outside_window": "yes"},
    )
    assert refused.status_code == 403
    assert len(staff_replies(services)) == 2


def test_roles_operators_never_see_the_inbox(services: Services, client: TestClient) -> None:
    text_in(services, UNKNOWN, "hello")
    conversation = conversation_of(services)
    operator = sign_in(client, services, "operator")
    assert operator.get("/staff/inbox").status_code == 403
    assert operator.get(f"/staff/inbox/{conversation.id}").status_code == 403
    assert operator.post(f"/staff/inbox/{conversation.id}/handled").status_code == 403
    assert "/staff/inbox" not in operator.get("/staff/").text
    assert inbox.is_unread(conversation)


# --- unknown numbers ------------------------------------------------------------------------


def test_an_unknown_number_is_linked_to_the_patient_chosen_by_search(
    services: Services, clinician: StaffClient, clock: MovableClock
) -> None:
    ada = enroll(services, weeks=20, name="Ada Lovelace")
    text_in(services, phone_of(services, ada.patient_id), "hello from my own phone")
    clock.advance(timedelta(minutes=1))
    text_in(services, UNKNOWN, "this is Ada on my partner's phone")
    stranger = conversation_of(services)
    page = clinician.get(f"/staff/inbox/{stranger.id}").text
    assert "Texts from an unknown number" in page and UNKNOWN in page
    assert 'name="form_key"' not in page  # never a reply to a number we do not know
    refused = clinician.post(f"/staff/inbox/{stranger.id}/reply", {"reply": "hello"})
    assert refused.status_code == 400 and "link it to a patient first" in refused.text

    found = clinician.get(f"/staff/inbox/{stranger.id}?q=Lovelace").text
    assert "Link to Ada Lovelace" in found
    linked = clinician.post(f"/staff/inbox/{stranger.id}/link", {"patient_id": str(ada.patient_id)})
    assert linked.status_code == 303
    hers = conversation_of(services, patient_id=ada.patient_id)
    assert linked.headers["location"] == f"/staff/inbox/{hers.id}"
    page = after(clinician, linked)
    assert "hello from my own phone" in page and "on my partner&#39;s phone" in page
    with services.db.session() as session:
        assert session.execute(select(Conversation)).scalars().all() == [
            session.get(Conversation, hers.id)
        ]
    assert inbox.is_unread(hers)
    [event] = audits(services, "conversation_linked")
    assert event.patient_id == ada.patient_id and len(event.detail["texts"]) == 1
    assert UNKNOWN not in str(event.detail)
    # Her number on record is unchanged: a reply goes to it, never to the other phone.
    assert phone_of(services, ada.patient_id) != UNKNOWN
    bad = clinician.post(f"/staff/inbox/{hers.id}/link", {"patient_id": ""})
    assert "choose the patient" in after(clinician, bad)


def test_an_unknown_number_is_marked_a_wrong_number(
    services: Services, clinician: StaffClient
) -> None:
    text_in(services, UNKNOWN, "is this the pizza place")
    stranger = conversation_of(services)
    marked = clinician.post(f"/staff/inbox/{stranger.id}/wrong-number")
    assert "Marked as a wrong number" in after(clinician, marked)
    now = conversation_of(services)
    assert now.wrong_number_at is not None and not inbox.is_unread(now)
    assert now.wrong_number_by is not None
    assert "Wrong number" in clinician.get("/staff/inbox").text
    [event] = audits(services, "conversation_wrong_number")
    assert event.actor.endswith("clinician@clinic.example")

    ada = enroll(services, weeks=20)
    text_in(services, phone_of(services, ada.patient_id), "hello")
    hers = conversation_of(services, patient_id=ada.patient_id)
    refused = clinician.post(f"/staff/inbox/{hers.id}/wrong-number")
    assert "only an unknown number can be wrong" in after(clinician, refused)
