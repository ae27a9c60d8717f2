"""Provider webhooks through the app: signatures (by the SDKs' own code and the test
vectors in docs/providers.md), deduplication, the status state machine, and what each
provider event does."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from twilio.request_validator import RequestValidator

from campaigns.bootstrap import Services
from campaigns.delivery import claim_due
from campaigns.storage.models import (
    ConsentEvent,
    Patient,
    ProviderEvent,
    ScheduledMessage,
    Suppression,
)
from campaigns.web.app import create_app
from campaigns.web.webhooks import form_params, sendgrid_signed, twilio_signed
from tests.integration.helpers import enroll, rows

TOKEN = "test_auth_token_0123456789abcdef"
PUBLIC = "https://clinic.example"
STATUS = "/webhooks/twilio/status"
EVENTS = "/webhooks/sendgrid/events"
SM = ScheduledMessage
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_KEY = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()


@pytest.fixture
def app_services(make_services: object, database_url: str) -> Services:
    assert callable(make_services)
    made: Services = make_services(
        database_url,
        public_url=PUBLIC,
        twilio_auth_token=TOKEN,
        sendgrid_event_public_key=PUBLIC_KEY,
    )
    return made


@pytest.fixture
def client(app_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(app_services)) as test_client:
        yield test_client


def sent(services: Services, channel: str) -> ScheduledMessage:
    """Enrol a patient and send their welcome on `channel` through the fake provider."""
    enroll(services, weeks=20, channels=channel, email="pat@example.com")
    claimed = claim_due(services.db, services.clock.now(), 10, 10)
    [(_, [message_id])] = claimed.batches
    services.deliverer.send_one(message_id, claimed.token)
    [row] = [r for r in rows(services) if r.id == message_id]
    assert row.status == "sent"
    return row


def status_callback(
    client: TestClient,
    row: ScheduledMessage,
    status: str,
    error: str = "",
    *,
    sign: bool = True,
    query: str | None = None,
) -> int:
    params = {
        "MessageSid": row.provider_id or "SMunknown",
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": "AC" + "0" * 32,
        "To": "+447400000001",
        "ApiVersion": "2010-04-01",
    }
    if error:
        params["ErrorCode"] = error
    query = f"m={row.id}" if query is None else query
    path = STATUS + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sign:
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
            PUBLIC + path, params
        )
    return client.post(path, content=urllib.parse.urlencode(params), headers=headers).status_code


def reread(services: Services, row: ScheduledMessage) -> ScheduledMessage:
    with services.db.session() as session:
        found = session.get(SM, row.id)
        assert found is not None
        return found


def count(services: Services, model: type) -> int:
    with services.db.session() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


# --- Twilio status callbacks ----------------------------------------------------------------


def test_signed_callbacks_move_the_message_to_delivered(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    assert status_callback(client, row, "sent") == 204
    assert status_callback(client, row, "delivered") == 204
    after = reread(app_services, row)
    assert after.status == "delivered" and after.delivered_at is not None


def test_late_callbacks_never_move_a_status_backwards(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    status_callback(client, row, "delivered")
    status_callback(client, row, "sent")
    assert reread(app_services, row).status == "delivered"


@pytest.mark.parametrize("change", ["unsigned", "wrong", "http", "no_query"])
def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    client: TestClient, app_services: Services, change: str
) -> None:
    row = sent(app_services, "sms")
    params = {"MessageSid": row.provider_id, "MessageStatus": "delivered"}
    path = f"{STATUS}?m={row.id}"
    url = {"http": PUBLIC.replace("https", "http") + path, "no_query": PUBLIC + STATUS}.get(
        change, PUBLIC + path
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if change != "unsigned":
        token = "not-the-token" if change == "wrong" else TOKEN
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(url, params)
    response = client.post(path, content=urllib.parse.urlencode(params), headers=headers)
    assert response.status_code == 403
    assert reread(app_services, row).status == "sent"
    assert count(app_services, ProviderEvent) == 0


def test_a_replayed_callback_has_no_second_effect(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    assert status_callback(client, row, "undelivered", "30003") == 204
    first = reread(app_services, row)
    assert (first.status, first.reason) == ("pending", "resend_after_30003")
    assert status_callback(client, row, "undelivered", "30003") == 204
    again = reread(app_services, row)
    assert (again.status, again.attempts, again.next_attempt_at) == (
        first.status,
        first.attempts,
        first.next_attempt_at,
    )
    assert count(app_services, ProviderEvent) == 1


def test_an_opt_out_reported_later_suppresses_sms(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    assert status_callback(client, row, "failed", "21610") == 204
    assert reread(app_services, row).status == "failed"
    with app_services.db.session() as session:
        assert session.execute(select(Suppression.channel)).scalars().all() == ["sms"]
        withdrawn = session.execute(
            select(ConsentEvent).where(ConsentEvent.granted.is_(False))
        ).scalar_one()
    assert (withdrawn.source, withdrawn.channel) == ("provider", "sms")


def test_a_dead_number_moves_the_patient_to_email(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    assert status_callback(client, row, "undelivered", "30005") == 204
    assert reread(app_services, row).status == "undelivered"
    with app_services.db.session() as session:
        patient = session.execute(select(Patient)).scalar_one()
    assert patient.phone_invalid_reason == "twilio:30005"
    assert [r for r in rows(app_services) if r.channel == "email" and r.status == "pending"]


def test_an_unknown_send_is_resolved_by_our_id_in_the_callback_url(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "sms")
    with app_services.db.session() as session:  # as if the send crashed mid-call
        session.execute(
            update(SM).where(SM.id == row.id).values(status="unknown", provider_id=None)
        )
    row.provider_id = "SMfromthecallback00000000000000000"
    assert status_callback(client, row, "delivered") == 204
    after = reread(app_services, row)
    assert (after.status, after.provider_id) == ("delivered", row.provider_id)


@pytest.mark.parametrize(
    ("body", "status"), [("", 400), ("MessageStatus=sent", 400), ("x=" + "a" * 70_000, 413)]
)
def test_malformed_or_oversized_callbacks_get_a_4xx(
    client: TestClient, body: str, status: int
) -> None:
    params = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + STATUS, params)
    response = client.post(
        STATUS,
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )
    assert response.status_code == status


def test_providers_md_twilio_vectors() -> None:
    status_body = (
        "SmsSid=SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&SmsStatus=undelivered&MessageStatus="
        "undelivered&To=%2B447700900123&MessagingServiceSid=MGcccccccccccccccccccccccc"
        "cccccccc&MessageSid=SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb&AccountSid=ACaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaa&From=%2B447700900000&ApiVersion=2010-04-01&ErrorCode"
        "=30003"
    )
    url = "https://sms.example.org/twilio/status?tenant=7"
    params = form_params(status_body.encode())
    assert twilio_signed(url, params, "vlrQ0IDEDzgqtTcYXzoLOBKyh0c=", TOKEN)
    assert twilio_signed(
        url.replace("sms.example.org", "sms.example.org:443"),
        params,
        "vlrQ0IDEDzgqtTcYXzoLOBKyh0c=",
        TOKEN,
    )
    assert not twilio_signed(
        url.replace("https", "http"), params, "vlrQ0IDEDzgqtTcYXzoLOBKyh0c=", TOKEN
    )
    assert not twilio_signed(
        url.split("?", maxsplit=1)[0], params, "vlrQ0IDEDzgqtTcYXzoLOBKyh0c=", TOKEN
    )
    published = form_params(
        b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234"
        b"&From=%2B14158675309&To=%2B18005551212"
    )
    assert twilio_signed(
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        published,
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        "12345",
    )


# --- SendGrid events -------------------------------------------------------------------------


def post_events(
    client: TestClient,
    events: list[dict[str, Any]] | bytes,
    *,
    key: ec.EllipticCurvePrivateKey = KEY,
    timestamp: str | None = None,
) -> int:
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    timestamp = timestamp or str(int(time.time()))
    signature = base64.b64encode(
        key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    return client.post(
        EVENTS,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": signature,
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    ).status_code


def event(row: ScheduledMessage, kind: str, n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "email": "pat@example.com",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": f"{kind}-{row.id}-{n}",
        "sg_message_id": f"{row.provider_id}.x-1",
        "message_id": str(row.id),
        **extra,
    }


def test_signed_events_move_an_email_to_delivered_once(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "email")
    batch = [
        event(row, "processed"),
        event(row, "deferred", attempt="1"),
        event(row, "delivered", response="250 OK"),
    ]
    assert post_events(client, batch) == 204
    assert post_events(client, batch) == 204  # SendGrid retries: no second effect
    after = reread(app_services, row)
    assert after.status == "delivered"
    assert count(app_services, ProviderEvent) == 3


def test_a_hard_bounce_marks_the_address_invalid(
    client: TestClient, app_services: Services
) -> None:
    row = sent(app_services, "email")
    assert post_events(client, [event(row, "bounce", type="bounce", status="5.1.1")]) == 204
    assert reread(app_services, row).status == "bounced"
    with app_services.db.session() as session:
        patient = session.execute(select(Patient)).scalar_one()
    assert patient.email_invalid_reason == "sendgrid:bounce"


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("spamreport", {}),
        ("unsubscribe", {}),
        ("group_unsubscribe", {"asm_group_id": 1}),
        ("dropped", {"reason": "Unsubscribed Address"}),
        ("dropped", {"reason": "Spam Reporting Address"}),
    ],
)
def test_opt_out_events_suppress_email(
    client: TestClient, app_services: Services, kind: str, extra: dict[str, Any]
) -> None:
    row = sent(app_services, "email")
    assert post_events(client, [event(row, kind, **extra)]) == 204
    with app_services.db.session() as session:
        assert session.execute(select(Suppression.channel)).scalars().all() == ["email"]


@pytest.mark.parametrize("change", ["unsigned", "other_key", "stale", "tampered"])
def test_bad_signatures_or_stale_batches_are_refused(
    client: TestClient, app_services: Services, change: str
) -> None:
    row = sent(app_services, "email")
    batch = [event(row, "delivered")]
    if change == "unsigned":
        status = client.post(EVENTS, json=batch).status_code
    elif change == "other_key":
        status = post_events(client, batch, key=ec.generate_private_key(ec.SECP256R1()))
    elif change == "stale":
        status = post_events(client, batch, timestamp=str(int(time.time()) - 3600))
    else:
        body = json.dumps(batch).encode()
        timestamp = str(int(time.time()))
        signature = base64.b64encode(
            KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode()
        status = client.post(
            EVENTS,
            content=body.replace(b"delivered", b"bounce  "),
            headers={
                "X-Twilio-Email-Event-Webhook-Signature": signature,
                "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            },
        ).status_code
    assert status == 403
    assert reread(app_services, row).status == "sent"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json", 400), (b'{"event": "x"}', 400), (b"[" + b" " * (6 * 1024 * 1024) + b"]", 413)],
)
def test_malformed_or_oversized_batches_get_a_4xx(
    client: TestClient, body: bytes, status: int
) -> None:
    assert post_events(client, body) == status


def test_providers_md_sendgrid_vector() -> None:
    key = (
        "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE74gMjvgWiBeWwYjlcbAaxvcMUmJ0VtrkhnWO/9nGPd1c28"
        "EeJIg6ElmCQqlYdblqiFT2S/+ayaM4ELgfFU9U5Q=="
    )
    body = (
        b'[{"email":"pat@example.org","timestamp":1700000000,"event":"delivered","sg_event'
        b'_id":"ZGVsaXZlcmVkLTAtMjQ","sg_message_id":"W86EgYT6SQKk0lRflfLRsA.recvd-5f8f8b9d6-'
        b'abcde-1-6554F5A0-1.0","response":"250 OK","notification_id":"n-123"}]\r\n'
    )
    signature = (
        "MEYCIQD8QFbkQPVaM5Be1HRjgri8t9c3cCwnWbgEcpRpuxQ62gIhAJysu4EXagnC3GJqqncAbcHyD"
        "vJ6gfIWnv2I4JP9MVF7"
    )
    assert sendgrid_signed(key, body, signature, "1700000005")
    assert not sendgrid_signed(key, json.dumps(json.loads(body)).encode(), signature, "1700000005")
    assert not sendgrid_signed(key, body, signature, "1700000006")
