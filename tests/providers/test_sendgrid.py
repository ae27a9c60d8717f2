"""The SendGrid sender through the official SDK against the local SendGrid server."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaigns.providers.sendgrid import activity_query
from campaigns.rules.ports import (
    Attempt,
    ConfigurationError,
    InvalidAddressError,
    LookupVerdict,
    OutgoingEmail,
    PermanentError,
    ProviderError,
    RetryableError,
    UnknownOutcomeError,
)
from campaigns.sandbox.credentials import TEST_API_KEY
from campaigns.sandbox.sendgrid_server import SendGridSandbox
from tests.providers.conftest import closed_port, sendgrid_sender, set_fault


def email(to: str = "pat@example.com", message_id: int = 7) -> OutgoingEmail:
    return OutgoingEmail(
        message_id,
        to,
        "Your Santi leg-care tip",
        "<p>Hello</p>",
        "Hello",
        "leg-cramps:welcome",
        "https://clinic.example/u/TOKEN",
    )


def test_the_mail_is_multipart_with_unsubscribe_headers_and_our_id(
    sendgrid_sandbox: SendGridSandbox,
) -> None:
    receipt = sendgrid_sender(sendgrid_sandbox.url).send_email(email())
    [recorded] = sendgrid_sandbox.recorder.snapshot()
    assert receipt.provider == "sendgrid"
    assert receipt.provider_id == recorded["x_message_id"]
    assert recorded["message_id"] == 7  # ours, from custom_args
    mail = recorded["mail"]
    assert [c["type"] for c in mail["content"]] == ["text/plain", "text/html"]
    assert mail["personalizations"][0]["custom_args"] == {"message_id": "7"}
    assert "custom_args" not in mail  # message-level custom_args is a spec type error
    assert mail["categories"] == ["leg-cramps:welcome"]
    assert mail["headers"] == {
        "List-Unsubscribe": "<https://clinic.example/u/TOKEN>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert mail["tracking_settings"]["open_tracking"] == {"enable": False}
    assert mail["from"] == {"email": "hello@santi.example", "name": "Santi Clinic"}


@pytest.mark.parametrize(
    ("local", "error", "code"),
    [
        ("invalid-address", InvalidAddressError, "400"),
        ("too-large", PermanentError, "413"),
        ("rate-limited", RetryableError, "429"),
        ("server-error", RetryableError, "503"),
    ],
)
def test_every_error_is_classified(
    sendgrid_sandbox: SendGridSandbox, local: str, error: type[ProviderError], code: str
) -> None:
    with pytest.raises(error) as caught:
        sendgrid_sender(sendgrid_sandbox.url).send_email(email(f"{local}@example.com"))
    assert caught.value.code == code
    assert type(caught.value) is error
    assert sendgrid_sandbox.recorder.snapshot() == []


def test_429_says_when_to_retry(sendgrid_sandbox: SendGridSandbox) -> None:
    with pytest.raises(RetryableError) as caught:
        sendgrid_sender(sendgrid_sandbox.url).send_email(email("rate-limited@example.com"))
    assert caught.value.retry_after is not None
    assert 0 <= caught.value.retry_after <= 2


def test_a_wrong_key_stops_the_channel(sendgrid_sandbox: SendGridSandbox) -> None:
    with pytest.raises(ConfigurationError) as caught:
        sendgrid_sender(sendgrid_sandbox.url, key="SG.wrong.key").send_email(email())
    assert caught.value.code == "401"


def test_a_timeout_after_sending_is_an_unknown_outcome(sendgrid_sandbox: SendGridSandbox) -> None:
    with pytest.raises(UnknownOutcomeError):
        sendgrid_sender(sendgrid_sandbox.url, timeout=0.5).send_email(email("slow@example.com"))


def test_connection_refused_is_safe_to_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableError):
        sendgrid_sender(f"http://127.0.0.1:{port}").send_email(email())


def attempt_of(message: OutgoingEmail, started_at: datetime | None = None) -> Attempt:
    return Attempt(
        message.message_id,
        message.to,
        message.text,
        message.subject,
        started_at or datetime.now(UTC),
    )


@pytest.fixture
def settled_sendgrid() -> Iterator[SendGridSandbox]:
    """A sandbox whose messages reach their final activity status at once."""
    server = SendGridSandbox(0, callback_delay=0.0)
    server.start()
    yield server
    server.stop()


def activity(sandbox: SendGridSandbox, query: str, limit: int = 10) -> Any:
    """GET /v3/messages on the sandbox as SendGrid documents it, encoded as curl would."""
    url = f"{sandbox.url}/v3/messages?limit={limit}&query={urllib.parse.quote(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_a_sent_email_is_found_with_its_x_message_id(sendgrid_sandbox: SendGridSandbox) -> None:
    sender = sendgrid_sender(sendgrid_sandbox.url)
    message = email()
    receipt = sender.send_email(message)
    found = sender.find_email(attempt_of(message))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert found.provider_status == "processed"  # its events are not due yet
    assert found.evidence.startswith("sendgrid: 1 messages with our id, 1 to the address")
    assert message.to not in found.evidence and message.text not in found.evidence


@pytest.mark.parametrize(
    ("to", "status"),
    [("pat@example.com", "delivered"), ("bounce@example.com", "not_delivered")],
)
def test_the_activity_status_follows_the_events(
    settled_sendgrid: SendGridSandbox, to: str, status: str
) -> None:
    sender = sendgrid_sender(settled_sendgrid.url)
    message = email(to)
    receipt = sender.send_email(message)
    found = sender.find_email(attempt_of(message))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert found.provider_status == status


def test_an_email_never_sent_is_not_found(sendgrid_sandbox: SendGridSandbox) -> None:
    sender = sendgrid_sender(sendgrid_sandbox.url)
    sender.send_email(email(message_id=8))
    lookup = sender.find_email(attempt_of(email(message_id=7)))
    assert (lookup.verdict, lookup.provider_id) == (LookupVerdict.NOT_FOUND, None)
    assert lookup.evidence == "sendgrid: 0 messages with our id, 0 to the address; none matched"


def test_our_id_on_a_mail_to_another_address_is_not_our_message(
    sendgrid_sandbox: SendGridSandbox,
) -> None:
    """Another installation on the same account may have used the same message id."""
    sender = sendgrid_sender(sendgrid_sandbox.url)
    sender.send_email(email("someone-else@example.com"))
    lookup = sender.find_email(attempt_of(email()))
    assert lookup.verdict is LookupVerdict.NOT_FOUND
    assert "1 messages with our id, 0 to the address" in lookup.evidence


def test_an_empty_answer_soon_after_the_send_proves_nothing(
    sendgrid_sandbox: SendGridSandbox,
) -> None:
    """Email Activity lists a message some time after SendGrid accepts it."""
    sender = sendgrid_sender(sendgrid_sandbox.url, activity_lag=600)
    now = datetime.now(UTC)
    with pytest.raises(RetryableError) as early:
        sender.find_email(attempt_of(email(), now - timedelta(minutes=1)))
    assert early.value.code == "not_yet_listed"
    assert early.value.retry_after is not None and 500 < early.value.retry_after <= 540
    late = sender.find_email(attempt_of(email(), now - timedelta(minutes=11)))
    assert late.verdict is LookupVerdict.NOT_FOUND
    receipt = sender.send_email(email())
    found = sender.find_email(attempt_of(email(), now))  # a match needs no waiting
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)


def test_an_account_without_email_activity_cannot_be_asked() -> None:
    server = SendGridSandbox(0, activity=False)
    server.start()
    try:
        sender = sendgrid_sender(server.url)
        message = email()
        sender.send_email(message)
        lookup = sender.find_email(attempt_of(message))
    finally:
        server.stop()
    assert (lookup.verdict, lookup.error_code) == (LookupVerdict.UNSUPPORTED, "403")
    assert "no Email Activity access" in lookup.evidence


def test_a_lookup_with_a_wrong_key_stops_the_channel(sendgrid_sandbox: SendGridSandbox) -> None:
    with pytest.raises(ConfigurationError) as caught:
        sendgrid_sender(sendgrid_sandbox.url, key="SG.wrong.key").find_email(attempt_of(email()))
    assert caught.value.code == "401"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_lookup_sendgrid_cannot_answer_now_is_retried(
    sendgrid_sandbox: SendGridSandbox, status: int
) -> None:
    set_fault(sendgrid_sandbox.url, lookups=True, status=status)
    with pytest.raises(RetryableError) as caught:
        sendgrid_sender(sendgrid_sandbox.url).find_email(attempt_of(email()))
    assert caught.value.code == str(status)
    if status == 429:
        assert caught.value.retry_after is not None and caught.value.retry_after <= 2


def test_a_lookup_when_sendgrid_is_down_or_slow_is_retried(
    sendgrid_sandbox: SendGridSandbox,
) -> None:
    with pytest.raises(RetryableError) as refused:
        sendgrid_sender(f"http://127.0.0.1:{closed_port()}").find_email(attempt_of(email()))
    assert refused.value.code == "connection_error"
    set_fault(sendgrid_sandbox.url, lookups=True, delay=1.0, accept=True)
    with pytest.raises(RetryableError) as slow:
        sendgrid_sender(sendgrid_sandbox.url, timeout=0.3).find_email(attempt_of(email()))
    assert slow.value.code == "connection_lost"


def test_the_sandbox_answers_the_documented_query_forms(sendgrid_sandbox: SendGridSandbox) -> None:
    sender = sendgrid_sender(sendgrid_sandbox.url)
    first = sender.send_email(email("pat@example.com", message_id=7)).provider_id
    second = sender.send_email(email("sam@example.com", message_id=8)).provider_id

    def ids(query: str) -> list[str]:
        listed = activity(sendgrid_sandbox, query)["messages"]
        return [m["msg_id"].split(".")[0] for m in listed]

    assert ids(activity_query(7)) == [first]
    assert ids("(unique_args['message_id']=\"8\")") == [second]
    assert ids(f"msg_id LIKE '{first}%'") == [first]
    assert ids('to_email="SAM@example.com"') == [second]
    assert ids(f"msg_id LIKE '{second}%' AND to_email=\"sam@example.com\"") == [second]
    assert ids(f"msg_id LIKE '{second}%' AND to_email=\"pat@example.com\"") == []
    assert ids("") == [second, first]  # newest first
    [listed] = activity(sendgrid_sandbox, activity_query(7))["messages"]
    assert set(listed) == {
        "from_email",
        "msg_id",
        "subject",
        "to_email",
        "status",
        "opens_count",
        "clicks_count",
        "last_event_time",
    }
    assert (listed["from_email"], listed["subject"]) == ("hello@santi.example", email().subject)
    assert len(activity(sendgrid_sandbox, "", limit=1)["messages"]) == 1
    # The form SendGrid's own query reference shows is refused by SendGrid, and so here.
    with pytest.raises(urllib.error.HTTPError) as refused:
        activity(sendgrid_sandbox, 'unique_args="7"')
    assert refused.value.code == 400
    assert "incompatible with MAP" in refused.value.read().decode()
    refused.value.close()
