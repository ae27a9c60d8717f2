"""The message log and its fixes, on SQLite and PostgreSQL: every filter, keyset pages, each
action (retry, mark sent, mark not sent, cancel) with its audit rows and refusals, who may see
and do what, a late bounce, and the CLI's `failed` and `requeue`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from campaigns import enrollments, message_actions, message_log, reachability, receipts
from campaigns.bootstrap import Services
from campaigns.message_actions import Action
from campaigns.rules.errors import InputError
from campaigns.rules.vocabulary import Channel, ConsentSource
from campaigns.storage.models import AuditEvent, Patient, ProviderEvent, ScheduledMessage
from campaigns.web.app import create_app
from tests.integration.helpers import enroll, rows
from tests.integration.processes import campaigns, env_with
from tests.integration.staff import StaffClient, sign_in

SM = ScheduledMessage


@pytest.fixture
def anonymous(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as client:
        yield client


def member(anonymous: TestClient, services: Services, role: str) -> StaffClient:
    return sign_in(anonymous, services, role)


def set_row(services: Services, message_id: int, **values: Any) -> None:
    with services.db.session() as session:
        session.execute(update(SM).where(SM.id == message_id).values(**values))


def row(services: Services, message_id: int) -> ScheduledMessage:
    with services.db.session() as session:
        found = session.get(SM, message_id)
        assert found is not None
        return found


def audits(services: Services, action: str) -> list[AuditEvent]:
    with services.db.session() as session:
        return list(
            session.execute(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            ).scalars()
        )


def shown_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<a href="/staff/messages/(\d+)">', html)]


def two_patients(services: Services) -> tuple[Any, Any, list[int], list[int]]:
    ada = enroll(services, weeks=20, name="Ada Lovelace", phone="07400 111222")
    bea = enroll(services, weeks=30, name="Bea Example", phone="+44 7400 333444")
    return (
        ada,
        bea,
        [r.id for r in rows(services, ada.enrollment_id)],
        [r.id for r in rows(services, bea.enrollment_id)],
    )


def log(services: Services, **filters: Any) -> list[int]:
    parsed = message_log.parse_filters(statuses=filters.pop("statuses", []), **filters)
    with services.db.session() as session:
        return [r.id for r in message_log.page(session, parsed, with_patients=True).rows]


# -- the log -----------------------------------------------------------------------------------


def test_each_filter_finds_its_rows_newest_first(services: Services) -> None:
    ada, bea, ada_ids, bea_ids = two_patients(services)
    everything = sorted(ada_ids + bea_ids, reverse=True)
    assert log(services) == everything
    failed, bounced, undelivered, unknown = ada_ids[0], ada_ids[1], bea_ids[0], bea_ids[1]
    now = services.clock.now()
    set_row(services, failed, status="failed", error_code="21617", provider="twilio")
    set_row(services, bounced, status="bounced", provider="sendgrid", sent_at=now)
    set_row(services, undelivered, status="undelivered", provider="twilio", sent_at=now)
    set_row(services, unknown, status="unknown", provider="local", reason="needs_review")
    assert log(services, statuses=["failed"]) == [failed]
    assert log(services, statuses=["failed", "unknown"]) == sorted([failed, unknown])[::-1]
    assert log(services, statuses=["bounced"]) == [bounced]
    assert log(services, statuses=["undelivered,bounced"]) == sorted([bounced, undelivered])[::-1]
    by_channel = log(services, channel="email")
    assert by_channel and all(row(services, i).channel == "email" for i in by_channel)
    assert log(services, provider="local") == [unknown]
    assert log(services, campaign="leg-cramps") == everything
    assert log(services, campaign="no-such-campaign") == []
    step = row(services, ada_ids[0]).step_key
    assert log(services, step=step) == sorted(
        [i for i in everything if row(services, i).step_key == step], reverse=True
    )
    # Due dates: the day of one row takes it and nothing due on other days.
    due = row(services, bea_ids[-1]).due_at.date()
    on_day = log(services, since=due.isoformat(), until=due.isoformat())
    assert bea_ids[-1] in on_day
    assert all(row(services, i).due_at.date() == due for i in on_day)
    assert log(services, since=(due + timedelta(days=400)).isoformat()) == []
    # A patient by number, by name (any case), and by phone in any common form.
    assert log(services, patient=str(ada.patient_id)) == sorted(ada_ids, reverse=True)
    assert log(services, patient=f"#{bea.patient_id}") == sorted(bea_ids, reverse=True)
    assert log(services, patient="lovelace") == sorted(ada_ids, reverse=True)
    for phone in ("07400111222", "07400 111 222", "+447400111222", "+44 7400 111222"):
        assert log(services, patient=phone) == sorted(ada_ids, reverse=True), phone
    assert log(services, patient="07400 999 999") == []


def test_bad_filters_are_named_in_staff_words(anonymous: TestClient, services: Services) -> None:
    client = member(anonymous, services, "clinician")
    for params, words in (
        ({"status": "lost"}, "Status"),
        ({"channel": "fax"}, "Channel"),
        ({"since": "yesterday"}, "From"),
        ({"since": "2027-02-01", "until": "2027-01-01"}, "To"),
        ({"before": "abc"}, "Page"),
    ):
        page = client.get("/staff/messages", params=params)
        assert page.status_code == 400 and words in page.text, params
        assert "since:" not in page.text and "until:" not in page.text  # staff words


def test_keyset_pages_show_each_row_once_newest_first(
    anonymous: TestClient, services: Services
) -> None:
    ids: list[int] = []
    for _ in range(4):
        done = enroll(services, weeks=20)
        ids += [r.id for r in rows(services, done.enrollment_id)]
    ids.sort(reverse=True)
    seen: list[int] = []
    before: int | None = None
    with services.db.session() as session:
        while True:
            page = message_log.page(
                session, message_log.Filters(), before=before, limit=3, with_patients=True
            )
            seen += [r.id for r in page.rows]
            if page.next_before is None:
                break
            before = page.next_before
    assert seen == ids
    # The page itself: "Older messages" carries the filters and the last id shown.
    client = member(anonymous, services, "viewer")
    first = client.get("/staff/messages", params={"channel": "sms"})
    sms = [i for i in ids if row(services, i).channel == "sms"]
    assert shown_ids(first.text) == sms
    older = client.get("/staff/messages", params={"channel": "sms", "before": sms[1]})
    assert shown_ids(older.text) == sms[2:]
    assert "Newest messages" in older.text


# -- actions -----------------------------------------------------------------------------------


def act(client: StaffClient, action: str, ids: list[int], note: str = "", back_to: str = "") -> str:
    answer = client.post(
        "/staff/messages/actions",
        data={"action": action, "ids": [str(i) for i in ids], "note": note, "back_to": back_to},
        follow_redirects=True,
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def test_retry_requeues_failed_and_bounced_and_refuses_the_rest(
    anonymous: TestClient, services: Services
) -> None:
    done = enroll(services, weeks=20, email="ada@example.com")
    failed, waiting = [r.id for r in rows(services, done.enrollment_id)][:2]
    set_row(services, failed, status="failed", error_code="30007", provider="twilio", attempts=5)
    client = member(anonymous, services, "clinician")
    page = act(client, "retry", [failed, waiting, 99999], back_to="/staff/messages?status=failed")
    assert "1 message will be sent again." in page
    assert f"Message {waiting} not changed: it is waiting to be sent" in page
    assert "Message 99999 not changed: there is no such message" in page
    again = row(services, failed)
    assert (again.status, again.attempts, again.reason, again.error_code) == (
        "pending",
        0,
        "requeued",
        "30007",
    )
    assert row(services, waiting).status == "pending"
    [audited] = audits(services, "requeued")
    assert audited.actor.endswith("clinician@clinic.example") and audited.message_id == failed
    assert audited.detail["previous_status"] == "failed"
    assert audited.detail["error_code"] == "30007"
    # The message page now shows the earlier try with its error's meaning.
    message = client.get(f"/staff/messages/{failed}").text
    assert "retried by staff" in message and "filtered it as spam" in message


def test_a_bounced_email_is_retried_only_once_its_address_works(
    anonymous: TestClient, services: Services
) -> None:
    done = enroll(services, weeks=20, email="ada@example.com")
    email = next(r for r in rows(services, done.enrollment_id) if r.channel == "email")
    now = services.clock.now()
    set_row(
        services, email.id, status="bounced", provider="sendgrid", provider_id="sg1", sent_at=now
    )
    with services.db.session() as session:
        session.execute(
            update(Patient)
            .where(Patient.id == done.patient_id)
            .values(email_invalid_at=now, email_invalid_reason="sendgrid:bounce")
        )
    outcome = message_actions.apply(services.db, Action.RETRY, [email.id], now, actor="staff:1:a")
    assert not outcome.done and "email address is marked as not working" in outcome.summary()
    assert row(services, email.id).status == "bounced"
    with services.db.session() as session:  # staff corrected the address
        session.execute(
            update(Patient).where(Patient.id == done.patient_id).values(email_invalid_at=None)
        )
    outcome = message_actions.apply(services.db, Action.RETRY, [email.id], now, actor="staff:1:a")
    assert outcome.done == [email.id]
    again = row(services, email.id)
    assert (again.status, again.sent_at, again.provider_id) == ("pending", None, None)


def test_nothing_goes_back_to_pending_after_stop_or_loss(services: Services) -> None:
    now = services.clock.now()
    stopped = enroll(services, weeks=20)
    lost = enroll(services, weeks=20)
    opted = enroll(services, weeks=20)
    ids = {
        name: [r.id for r in rows(services, d.enrollment_id)]
        for name, d in (("stopped", stopped), ("lost", lost), ("opted", opted))
    }
    enrollments.stop(services.db, stopped.enrollment_id, now, actor="t", reason="stop")
    enrollments.record_loss(services.db, lost.enrollment_id, now, actor="t")
    with services.db.session() as session:
        patient = session.get(Patient, opted.patient_id)
        assert patient is not None
        reachability.opt_out(
            session,
            patient,
            Channel.SMS,
            now,
            source=ConsentSource.KEYWORD,
            reason="STOP",
            actor="patient",
        )
    sms_of_opted = next(i for i in ids["opted"] if row(services, i).channel == "sms")
    for message_id in (ids["stopped"][0], ids["lost"][0], sms_of_opted):
        set_row(services, message_id, status="failed")
    retry = message_actions.apply(
        services.db,
        Action.RETRY,
        [ids["stopped"][0], ids["lost"][0], sms_of_opted],
        now,
        actor="staff:1:a",
    )
    assert retry.done == []
    reasons = {r.message_id: r.reason for r in retry.refused}
    assert "stopped the programme" in reasons[ids["stopped"][0]]
    assert "pregnancy loss" in reasons[ids["lost"][0]]
    assert "opted out of texts" in reasons[sms_of_opted] or "consented" in reasons[sms_of_opted]
    assert all("cancel it instead" in r for r in reasons.values())
    # An unknown one marked not sent goes to failed, never pending.
    set_row(services, ids["lost"][1], status="unknown", reason="needs_review")
    marked = message_actions.apply(
        services.db,
        Action.MARK_NOT_SENT,
        [ids["lost"][1]],
        now,
        actor="staff:1:a",
        note="not in Twilio's log",
    )
    assert marked.done == [ids["lost"][1]] and marked.not_sendable
    assert row(services, ids["lost"][1]).status == "failed"
    assert "will not be sent again" in marked.summary()


def test_mark_sent_and_not_sent_need_an_unknown_message_and_a_note(
    anonymous: TestClient, services: Services
) -> None:
    done = enroll(services, weeks=20)
    first, second, third = [r.id for r in rows(services, done.enrollment_id)][:3]
    started = services.clock.now() - timedelta(hours=2)
    for message_id in (first, second):
        set_row(
            services,
            message_id,
            status="unknown",
            reason="needs_review",
            call_started_at=started,
            provider="twilio",
            attempts=1,
        )
    client = member(anonymous, services, "operator")
    page = act(client, "mark_sent", [first])
    assert "Note: say what the provider" in page and "Nothing was changed" in page
    assert row(services, first).status == "unknown"
    page = act(client, "mark_sent", [first, third], note="SM123 delivered in Twilio's log")
    assert "1 message marked as sent." in page
    assert f"Message {third} not changed: it is waiting to be sent" in page
    sent = row(services, first)
    assert sent.status == "sent" and sent.sent_at == started and sent.reconcile_at is None
    assert row(services, third).status == "pending"  # a pending row is never marked sent
    [audited] = audits(services, "marked_sent")
    assert audited.detail["note"] == "SM123 delivered in Twilio's log"
    page = act(client, "mark_not_sent", [second], note="not in Twilio's log")
    assert "1 message marked as not sent. 1 will be sent again." in page
    again = row(services, second)
    assert (again.status, again.reason, again.call_started_at) == (
        "pending",
        "marked_not_sent",
        None,
    )
    assert audits(services, "marked_not_sent")[0].actor.endswith("operator@clinic.example")
    # The message page shows the operator no patient and no text, but the try and its note.
    message = client.get(f"/staff/messages/{second}").text
    assert "Test Patient" not in message and "not in Twilio&#39;s log" in message


def test_cancel_takes_waiting_failed_and_unknown_rows(services: Services) -> None:
    done = enroll(services, weeks=20)
    waiting, failed, unknown, sent = [r.id for r in rows(services, done.enrollment_id)][:4]
    now = services.clock.now()
    set_row(services, failed, status="failed")
    set_row(services, unknown, status="unknown")
    set_row(services, sent, status="sent", sent_at=now)
    outcome = message_actions.apply(
        services.db, Action.CANCEL, [waiting, failed, unknown, sent], now, actor="staff:2:b"
    )
    assert outcome.done == [waiting, failed, unknown]
    assert [r.message_id for r in outcome.refused] == [sent]
    assert {row(services, i).status for i in (waiting, failed, unknown)} == {"cancelled"}
    assert row(services, sent).status == "sent"
    assert len(audits(services, "cancelled_by_staff")) == 3
    with pytest.raises(InputError, match="Messages"):
        message_actions.parse_ids([])
    with pytest.raises(InputError, match="Action"):
        message_actions.parse_action("explode")


# -- who sees what ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "names", "acts"),
    [
        ("viewer", True, False),
        ("clinician", True, True),
        ("operator", False, True),
        ("admin", True, True),
    ],
)
def test_roles(
    anonymous: TestClient, services: Services, role: str, names: bool, acts: bool
) -> None:
    done = enroll(services, weeks=20, name="Gia Example")
    first = next(r.id for r in rows(services, done.enrollment_id) if r.channel == "sms")
    set_row(services, first, status="failed")
    client = member(anonymous, services, role)
    page = client.get("/staff/messages")
    assert page.status_code == 200
    assert ("Gia Example" in page.text) is names
    assert ('name="ids"' in page.text) is acts
    assert 'href="/staff/messages"' in client.get("/staff/").text
    by_patient = client.get("/staff/messages", params={"patient": "Gia"})
    assert by_patient.status_code == (200 if names else 400)
    answer = client.post("/staff/messages/actions", data={"action": "retry", "ids": [str(first)]})
    assert answer.status_code == (200 if acts else 403)
    assert (row(services, first).status == "pending") is acts
    message = client.get(f"/staff/messages/{first}")
    assert message.status_code == 200 and ("Gia Example" in message.text) is names
    email = client.get(f"/staff/messages/{first}/email")
    assert email.status_code == (404 if names else 403)  # an SMS has no email


def test_the_old_outbox_is_the_local_provider_view(
    anonymous: TestClient, services: Services
) -> None:
    done = enroll(services, weeks=20, name="Fay Example")
    first = rows(services, done.enrollment_id)[0].id
    set_row(services, first, provider="local", status="sent", sent_at=services.clock.now())
    client = member(anonymous, services, "viewer")
    old = client.get("/staff/outbox", follow_redirects=False)
    assert old.status_code == 307 and old.headers["location"] == "/staff/messages?provider=local"
    page = client.get("/staff/outbox", params={"q": "Fay"})
    assert shown_ids(page.text) == [first] and "Fay Example" in page.text
    assert client.get(f"/staff/outbox/{first}").url.path == f"/staff/messages/{first}"


def test_the_dashboard_links_failures_to_the_log(anonymous: TestClient, services: Services) -> None:
    client = member(anonymous, services, "operator")
    assert 'href="/staff/messages?status=failed&amp;status=unknown"' in client.get("/staff/").text


# -- the message page and a late bounce ----------------------------------------------------------


def test_a_bounce_after_delivered_shows_as_bounced_with_its_events(
    anonymous: TestClient, services: Services
) -> None:
    done = enroll(services, weeks=20, email="ada@example.com")
    email = next(r for r in rows(services, done.enrollment_id) if r.channel == "email")
    set_row(services, email.id, status="sending", provider="sendgrid", provider_id="sgX")
    context = receipts.Context(
        services.db, services.planner, services.window, services.settings.max_attempts
    )
    now = services.clock.now()
    events = [
        {
            "sg_event_id": f"e{n}",
            "event": kind,
            "message_id": str(email.id),
            "sg_message_id": "sgX.filter",
            **extra,
        }
        for n, (kind, extra) in enumerate(
            [
                ("processed", {}),
                ("delivered", {}),
                ("bounce", {"type": "bounce", "status": "5.1.1"}),
            ]
        )
    ]
    receipts.sendgrid_events(context, events, now)
    assert row(services, email.id).status == "bounced"
    assert log(services, statuses=["bounced"]) == [email.id]
    client = member(anonymous, services, "clinician")
    page = client.get(f"/staff/messages/{email.id}").text
    assert page.index("processed") < page.index("delivered") < page.index("<strong>bounce")
    assert "tag-bounced" in page and "the email bounced" in page
    with services.db.session() as session:
        kinds = session.execute(
            select(ProviderEvent.kind).where(ProviderEvent.message_id == email.id)
        ).scalars()
        assert list(kinds) == ["processed", "delivered", "bounce"]


def test_a_planned_text_shows_a_preview(anonymous: TestClient, services: Services) -> None:
    done = enroll(services, weeks=20)
    sms = next(r for r in rows(services, done.enrollment_id) if r.channel == "sms")
    client = member(anonymous, services, "viewer")
    page = client.get(f"/staff/messages/{sms.id}").text
    assert "A preview" in page and "Santi" in page
    assert "version 1</a>, approved by repository" in page  # the wording it is sent from
    assert client.get("/staff/messages/999999").status_code == 404


# -- the CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_failed_lists_what_requeue_takes(services: Services, database_url: str) -> None:
    done = enroll(services, weeks=20)
    failed, unknown, waiting = [r.id for r in rows(services, done.enrollment_id)][:3]
    set_row(services, failed, status="failed", error_code="21617", reason="PermanentError")
    set_row(services, unknown, status="unknown", reason="needs_review")
    env = env_with(CAMPAIGNS_DATABASE_URL=database_url)
    listed = campaigns("failed", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert [(r["id"], r["status"]) for r in found] == sorted(
        [(failed, "failed"), (unknown, "unknown")], reverse=True
    )
    assert {"id", "channel", "step", "status", "reason", "error_code", "updated_at"} <= set(
        found[0]
    )
    table = campaigns("failed", env=env)
    assert str(failed) in table.stdout and "21617" in table.stdout
    refused = campaigns("requeue", str(waiting), env=env)
    assert refused.returncode == 1
    assert f"message {waiting} is pending, not failed or unknown" in refused.stderr
    assert row(services, waiting).status == "pending"
