"""Sandbox servers on free ports, and senders pointed at them through the real SDKs."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from campaigns.providers.sendgrid import SendGridEmailSender
from campaigns.providers.twilio import TwilioSmsSender
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_API_KEY, TEST_AUTH_TOKEN
from campaigns.sandbox.sendgrid_server import SendGridSandbox
from campaigns.sandbox.twilio_server import TwilioSandbox


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
    base_url: str,
    *,
    token: str = TEST_AUTH_TOKEN,
    timeout: float = 5.0,
    from_: str | None = "+15005550006",
    messaging_service_sid: str | None = None,
) -> TwilioSmsSender:
    return TwilioSmsSender(
        TEST_ACCOUNT_SID,
        token,
        status_callback="https://clinic.example/webhooks/twilio/status",
        from_=from_,
        messaging_service_sid=messaging_service_sid,
        api_base_url=base_url,
        timeout=timeout,
    )


def sendgrid_sender(
    host: str, *, key: str = TEST_API_KEY, timeout: float = 5.0, activity_lag: float = 0.0
) -> SendGridEmailSender:
    """A SendGrid sender; the sandbox lists a message at once, so no Email Activity lag."""
    return SendGridEmailSender(
        key,
        from_email="hello@santi.example",
        from_name="Santi Clinic",
        host=host,
        timeout=timeout,
        activity_lag=activity_lag,
    )


def sandbox_call(url: str, method: str, data: dict[str, Any] | None = None) -> Any:
    """A call to a sandbox's own /_sandbox endpoints, over HTTP as any client would make it."""
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


def set_fault(sandbox_url: str, *, lookups: bool = False, **fault: Any) -> Any:
    """PUT a fault on a sandbox's sends (or, with `lookups`, on its lookup endpoints)."""
    path = "/_sandbox/faults/lookups" if lookups else "/_sandbox/faults"
    return sandbox_call(sandbox_url + path, "PUT", fault)


def closed_port() -> int:
    """A port nothing listens on: a provider that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
