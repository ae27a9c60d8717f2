"""The SendGrid sender through the official SDK against the local SendGrid server."""

from __future__ import annotations

import socket

import pytest

from campaigns.providers.base import (
    ConfigurationError,
    InvalidAddressError,
    OutgoingEmail,
    PermanentError,
    RetryableError,
    UnknownOutcomeError,
)
from campaigns.sandbox.sendgrid_server import SendGridSandbox
from tests.providers.conftest import sendgrid_sender


def email(to: str = "pat@example.com") -> OutgoingEmail:
    return OutgoingEmail(
        7,
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
    assert receipt.provider_id == recorded["message_id"]  # X-Message-Id
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
    sendgrid_sandbox: SendGridSandbox, local: str, error: type, code: str
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
