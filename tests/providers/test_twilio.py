"""The Twilio sender through the official SDK against the local Twilio server."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.providers.base import (
    ConfigurationError,
    InvalidAddressError,
    OptedOutError,
    OutgoingSms,
    RetryableError,
    UnknownOutcomeError,
)
from campaigns.providers.twilio import TWILIO_ERRORS, Action, classify
from campaigns.sandbox.twilio_server import TwilioSandbox
from tests.providers.conftest import twilio_sender


def sms(to: str = "+447400000001", message_id: int = 42) -> OutgoingSms:
    return OutgoingSms(
        message_id, to, "Santi: a test. Reply STOP to end", datetime.now(UTC) + timedelta(hours=2)
    )


def test_a_message_is_created_with_our_callback_and_validity(twilio_sandbox: TwilioSandbox) -> None:
    receipt = twilio_sender(twilio_sandbox.url).send_sms(sms())
    assert receipt.provider == "twilio"
    assert receipt.provider_id.startswith("SM")
    [recorded] = twilio_sandbox.recorder.snapshot()
    form = recorded["form"]
    assert (form["To"], form["From"], form["Body"]) == (
        "+447400000001",
        "+15005550006",
        "Santi: a test. Reply STOP to end",
    )
    assert form["StatusCallback"] == "https://clinic.example/webhooks/twilio/status?m=42"
    assert 7100 <= int(form["ValidityPeriod"]) <= 7200


def test_a_messaging_service_can_send_instead_of_a_number(twilio_sandbox: TwilioSandbox) -> None:
    sender = twilio_sender(twilio_sandbox.url, from_="", messaging_service_sid="MG" + "c" * 32)
    sender.send_sms(sms())
    form = twilio_sandbox.recorder.snapshot()[0]["form"]
    assert form["MessagingServiceSid"] == "MG" + "c" * 32
    assert "From" not in form


@pytest.mark.parametrize(
    ("to", "error", "code"),
    [
        ("+15005550001", InvalidAddressError, "21211"),
        ("+15005550002", ConfigurationError, "21612"),
        ("+15005550003", ConfigurationError, "21408"),
        ("+15005550004", OptedOutError, "21610"),
        ("+15005550009", InvalidAddressError, "21614"),
        ("+15005550429", RetryableError, "20429"),
        ("+15005550500", UnknownOutcomeError, "500"),  # the request reached Twilio
    ],
)
def test_every_error_is_classified(
    twilio_sandbox: TwilioSandbox, to: str, error: type, code: str
) -> None:
    with pytest.raises(error) as caught:
        twilio_sender(twilio_sandbox.url).send_sms(sms(to))
    assert caught.value.code == code
    assert twilio_sandbox.recorder.snapshot() == []


def test_wrong_credentials_stop_the_channel(twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(ConfigurationError) as caught:
        twilio_sender(twilio_sandbox.url, token="wrong").send_sms(sms())
    assert caught.value.code == "20003"


def test_a_timeout_after_sending_is_an_unknown_outcome(twilio_sandbox: TwilioSandbox) -> None:
    with pytest.raises(UnknownOutcomeError):
        twilio_sender(twilio_sandbox.url, timeout=0.5).send_sms(sms("+15005550999"))


def test_connection_refused_is_safe_to_retry() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RetryableError) as caught:
        twilio_sender(f"http://127.0.0.1:{port}").send_sms(sms())
    assert caught.value.code == "connection_refused"


def test_a_connection_dropped_mid_request_is_an_unknown_outcome() -> None:
    """The server read the request and hung up without answering: it may have been sent."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def swallow() -> None:
            connection, _ = server.accept()
            connection.recv(65536)
            connection.close()

        thread = threading.Thread(target=swallow)
        thread.start()
        with pytest.raises(UnknownOutcomeError) as caught:
            twilio_sender(f"http://127.0.0.1:{port}").send_sms(sms())
        thread.join()
    assert caught.value.code == "connection_lost"


def test_many_threads_share_one_sender(twilio_sandbox: TwilioSandbox) -> None:
    sender = twilio_sender(twilio_sandbox.url)
    with ThreadPoolExecutor(16) as pool:
        receipts = list(pool.map(lambda i: sender.send_sms(sms(message_id=i)), range(200)))
    assert len({receipt.provider_id for receipt in receipts}) == 200
    callbacks = sorted(m["form"]["StatusCallback"] for m in twilio_sandbox.recorder.snapshot())
    assert callbacks == sorted(
        f"https://clinic.example/webhooks/twilio/status?m={i}" for i in range(200)
    )


PROVIDERS_TABLE = {  # PROVIDERS.md 1.5, every code it lists
    21211: Action.INVALID_NUMBER,
    21610: Action.OPT_OUT,
    21408: Action.HALT,
    21614: Action.INVALID_NUMBER,
    21612: Action.HALT,
    21606: Action.HALT,
    21608: Action.HALT,
    21617: Action.GIVE_UP,
    21635: Action.INVALID_NUMBER,
    20003: Action.HALT,
    20404: Action.HALT,
    20429: Action.RETRY,
    30001: Action.RETRY,
    30002: Action.HALT,
    30003: Action.RETRY,
    30004: Action.OPT_OUT,
    30005: Action.INVALID_NUMBER,
    30006: Action.INVALID_NUMBER,
    30007: Action.GIVE_UP,
    30008: Action.RETRY,
    30032: Action.HALT,
    30034: Action.HALT,
    30500: Action.RETRY,
}


def test_the_table_classifies_every_documented_code() -> None:
    assert {code: classify(code, 400) for code in PROVIDERS_TABLE} == PROVIDERS_TABLE
    assert set(TWILIO_ERRORS) == set(PROVIDERS_TABLE)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (500, Action.UNKNOWN),
        (503, Action.UNKNOWN),
        (401, Action.HALT),
        (429, Action.RETRY),
        (400, Action.GIVE_UP),
    ],
)
def test_codes_outside_the_table_fall_back_on_the_http_status(status: int, action: Action) -> None:
    assert classify(None, status) is action
    assert classify(99999, status) is action
