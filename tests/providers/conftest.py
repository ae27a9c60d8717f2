"""Sandbox servers on free ports, and senders pointed at them through the real SDKs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from campaigns.providers.sendgrid import SendGridEmailSender
from campaigns.providers.twilio import TwilioSmsSender
from campaigns.sandbox.sendgrid_server import TEST_API_KEY, SendGridSandbox
from campaigns.sandbox.twilio_server import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, TwilioSandbox


@pytest.fixture
def twilio_sandbox() -> Iterator[TwilioSandbox]:
    server = TwilioSandbox(0, callbacks=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sendgrid_sandbox() -> Iterator[SendGridSandbox]:
    server = SendGridSandbox(0)
    server.start()
    yield server
    server.stop()


def twilio_sender(
    base_url: str, *, token: str = TEST_AUTH_TOKEN, timeout: float = 5.0, **kwargs: str
) -> TwilioSmsSender:
    options = {"from_": "+15005550006", **kwargs}
    return TwilioSmsSender(
        TEST_ACCOUNT_SID,
        token,
        status_callback="https://clinic.example/webhooks/twilio/status",
        api_base_url=base_url,
        timeout=timeout,
        **options,
    )


def sendgrid_sender(
    host: str, *, key: str = TEST_API_KEY, timeout: float = 5.0
) -> SendGridEmailSender:
    return SendGridEmailSender(
        key, from_email="hello@santi.example", from_name="Santi Clinic", host=host, timeout=timeout
    )
