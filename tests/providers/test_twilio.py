"""The Twilio sender through the official SDK against the local Twilio server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from twilio.base.exceptions import TwilioRestException

from campaigns.providers import twilio as twilio_provider
from campaigns.providers.twilio import TWILIO_ERRORS, ErrorAction, error_action
from campaigns.rules.ports import (
    Attempt,
    ConfigurationError,
    InvalidAddressError,
    LookupVerdict,
    OptedOutError,
    OutgoingSms,
    ProviderError,
    RetryableError,
    UnknownOutcomeError,
)
from campaigns.sandbox.twilio_server import TwilioSandbox
from tests.providers.conftest import closed_port, set_fault, twilio_sender

BODY = "Santi: a test. Reply STOP to end"


def sms(to: str = "+447400000001", message_id: int = 42, body: str = BODY) -> OutgoingSms:
    return OutgoingSms(message_id, to, body, datetime.now(UTC) + timedelta(hours=2))


def attempt_of(
    message: OutgoingSms, started_at: datetime | None = None, body: str | None = None
) -> Attempt:
    return Attempt(
        message.message_id,
        message.to,
        message.body if body is None else body,
        None,
        started_at or datetime.now(UTC),
    )


@pytest.fixture
def settled_twilio() -> Iterator[TwilioSandbox]:
    """A sandbox whose messages reach their final status (and a date_sent) at once."""
    server = TwilioSandbox(0, callbacks=False, callback_delay=0.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def queueing_twilio() -> Iterator[TwilioSandbox]:
    """A sandbox whose messages stay queued (no date_sent) for the whole test."""
    server = TwilioSandbox(0, callbacks=False, callback_delay=600.0)
    server.start()
    yield server
    server.stop()


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
    twilio_sandbox: TwilioSandbox, to: str, error: type[ProviderError], code: str
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


PROVIDERS_TABLE = {  # docs/providers.md, "Error codes we classify": every code listed
    21211: ErrorAction.INVALID_NUMBER,
    21610: ErrorAction.OPT_OUT,
    21408: ErrorAction.HALT,
    21614: ErrorAction.INVALID_NUMBER,
    21612: ErrorAction.HALT,
    21606: ErrorAction.HALT,
    21608: ErrorAction.HALT,
    21617: ErrorAction.GIVE_UP,
    21635: ErrorAction.INVALID_NUMBER,
    20003: ErrorAction.HALT,
    20404: ErrorAction.HALT,
    20429: ErrorAction.RETRY,
    30001: ErrorAction.RETRY,
    30002: ErrorAction.HALT,
    30003: ErrorAction.RETRY,
    30004: ErrorAction.OPT_OUT,
    30005: ErrorAction.INVALID_NUMBER,
    30006: ErrorAction.INVALID_NUMBER,
    30007: ErrorAction.GIVE_UP,
    30008: ErrorAction.RETRY,
    30032: ErrorAction.HALT,
    30034: ErrorAction.HALT,
    30500: ErrorAction.RETRY,
}


def test_the_table_classifies_every_documented_code() -> None:
    assert {code: error_action(code, 400) for code in PROVIDERS_TABLE} == PROVIDERS_TABLE
    assert set(TWILIO_ERRORS) == set(PROVIDERS_TABLE)


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (500, ErrorAction.UNKNOWN),
        (503, ErrorAction.UNKNOWN),
        (401, ErrorAction.HALT),
        (429, ErrorAction.RETRY),
        (400, ErrorAction.GIVE_UP),
    ],
)
def test_codes_outside_the_table_fall_back_on_the_http_status(
    status: int, action: ErrorAction
) -> None:
    assert error_action(None, status) is action
    assert error_action(99999, status) is action


def test_a_sent_message_is_found_with_its_sid_and_status(settled_twilio: TwilioSandbox) -> None:
    sender = twilio_sender(settled_twilio.url)
    started = datetime.now(UTC)
    message = sms()
    receipt = sender.send_sms(message)
    found = sender.find_sms(attempt_of(message, started))
    assert found.verdict is LookupVerdict.FOUND
    assert (found.provider_id, found.provider_status) == (receipt.provider_id, "delivered")
    day = started - twilio_provider.CLOCK_SKEW  # the GMT day of the earliest match
    assert found.evidence.startswith(f"twilio: 1 messages to the number sent since {day:%F}")
    assert message.to not in found.evidence and message.body not in found.evidence


def test_a_message_still_queued_has_no_date_sent_and_is_found_all_the_same(
    queueing_twilio: TwilioSandbox,
) -> None:
    """DateSent filters cannot see a queued message: the unfiltered newest ones are read too."""
    sender = twilio_sender(queueing_twilio.url)
    message = sms()
    receipt = sender.send_sms(message)
    client = sender.client()
    today = datetime.now(UTC).date().isoformat()
    assert client.messages.list(to=message.to, date_sent_after=today) == []
    found = sender.find_sms(attempt_of(message))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert found.provider_status == "queued"
    assert "1 not sent yet" in found.evidence


def test_an_undelivered_message_is_found_with_its_error(settled_twilio: TwilioSandbox) -> None:
    sender = twilio_sender(settled_twilio.url)
    message = sms("+15005550908")
    receipt = sender.send_sms(message)
    found = sender.find_sms(attempt_of(message))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert (found.provider_status, found.error_code) == ("undelivered", "30003")


def test_a_message_never_sent_is_not_found(settled_twilio: TwilioSandbox) -> None:
    sender = twilio_sender(settled_twilio.url)
    sender.send_sms(sms("+447400000002"))  # another patient's message
    lookup = sender.find_sms(attempt_of(sms()))
    assert lookup.verdict is LookupVerdict.NOT_FOUND
    assert lookup.provider_id is None
    assert "0 messages to the number" in lookup.evidence


def test_the_same_number_with_another_body_is_not_found(settled_twilio: TwilioSandbox) -> None:
    sender = twilio_sender(settled_twilio.url)
    message = sms()
    sender.send_sms(message)
    lookup = sender.find_sms(attempt_of(message, body="Santi: another tip. Reply STOP to end"))
    assert lookup.verdict is LookupVerdict.NOT_FOUND
    assert "1 messages to the number" in lookup.evidence


def test_a_message_created_long_before_the_attempt_started_is_not_its_message(
    settled_twilio: TwilioSandbox,
) -> None:
    """The same text sent earlier (yesterday's attempt, say) is not this attempt's message;
    one created within the clock skew (2 minutes) before the start still is."""
    sender = twilio_sender(settled_twilio.url)
    message = sms()
    receipt = sender.send_sms(message)
    now = datetime.now(UTC)
    late = sender.find_sms(attempt_of(message, now + timedelta(minutes=10)))
    assert late.verdict is LookupVerdict.NOT_FOUND
    skewed = sender.find_sms(attempt_of(message, now + timedelta(seconds=90)))
    assert (skewed.verdict, skewed.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)


def test_the_lookup_pages_through_more_messages_than_one_page(
    settled_twilio: TwilioSandbox,
) -> None:
    sender = twilio_sender(settled_twilio.url)
    started = datetime.now(UTC)
    first = sms(body="Santi: the first. Reply STOP to end")
    receipt = sender.send_sms(first)
    for i in range(120):  # newer messages to the same number: the first is on the third page
        sender.send_sms(sms(message_id=100 + i, body=f"Santi: tip {i}. Reply STOP to end"))
    found = sender.find_sms(attempt_of(first, started))
    assert (found.verdict, found.provider_id) == (LookupVerdict.FOUND, receipt.provider_id)
    assert "121 messages to the number" in found.evidence
    assert sender.find_sms(attempt_of(first, started, body="never sent")).verdict is (
        LookupVerdict.NOT_FOUND
    )


def test_more_messages_than_a_lookup_reads_give_no_verdict(
    settled_twilio: TwilioSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the limit an unread page could hold the message: neither FOUND nor NOT_FOUND."""
    monkeypatch.setattr(twilio_provider, "LOOKUP_LIMIT", 5)
    sender = twilio_sender(settled_twilio.url)
    for i in range(6):
        sender.send_sms(sms(message_id=i, body=f"Santi: tip {i}. Reply STOP to end"))
    lookup = sender.find_sms(attempt_of(sms(body="not among them")))
    assert lookup.verdict is LookupVerdict.UNSUPPORTED
    assert "the rest unread" in lookup.evidence


def test_the_sandbox_list_filters_by_day_and_pages_like_twilio(
    settled_twilio: TwilioSandbox,
) -> None:
    client = twilio_sender(settled_twilio.url).client()
    sids = [twilio_sender(settled_twilio.url).send_sms(sms()).provider_id for _ in range(7)]
    today = client.messages(sids[0]).fetch().date_sent.date()  # their GMT day, even at midnight
    listed = client.messages.list(to="+447400000001", page_size=3)
    assert [m.sid for m in listed] == sids[::-1]  # newest first, over three pages
    after = client.messages.list(to="+447400000001", date_sent_after=today.isoformat())
    assert len(after) == 7
    tomorrow = (today + timedelta(days=1)).isoformat()
    yesterday = (today - timedelta(days=1)).isoformat()
    assert client.messages.list(to="+447400000001", date_sent_after=tomorrow) == []
    assert client.messages.list(to="+447400000001", date_sent_before=yesterday) == []
    assert len(client.messages.list(to="+447400000001", date_sent=today.isoformat())) == 7
    # A datetime goes as an ISO instant ("YYYY-MM-DDTHH:MM:SSZ"), compared as an instant.
    later = datetime.now(UTC) + timedelta(hours=1)
    assert client.messages.list(to="+447400000001", date_sent_after=later) == []
    assert client.messages.list(to="+447400000002") == []
    fetched = client.messages(sids[0]).fetch()
    assert (fetched.sid, fetched.status, fetched.body) == (sids[0], "delivered", BODY)
    assert isinstance(fetched.date_sent, datetime)
    with pytest.raises(TwilioRestException) as missing:
        client.messages("SM" + "0" * 32).fetch()
    assert (missing.value.status, missing.value.code) == (404, 20404)


@pytest.mark.parametrize(("status", "code"), [(429, "20429"), (500, "20500"), (503, "20503")])
def test_a_lookup_twilio_cannot_answer_now_is_retried(
    settled_twilio: TwilioSandbox, status: int, code: str
) -> None:
    set_fault(settled_twilio.url, lookups=True, status=status)
    with pytest.raises(RetryableError) as caught:
        twilio_sender(settled_twilio.url).find_sms(attempt_of(sms()))
    assert caught.value.code == code


def test_a_lookup_when_twilio_is_down_or_slow_is_retried(settled_twilio: TwilioSandbox) -> None:
    with pytest.raises(RetryableError) as refused:
        twilio_sender(f"http://127.0.0.1:{closed_port()}").find_sms(attempt_of(sms()))
    assert refused.value.code == "connection_refused"
    set_fault(settled_twilio.url, lookups=True, delay=1.0, accept=True)
    with pytest.raises(RetryableError) as slow:
        twilio_sender(settled_twilio.url, timeout=0.3).find_sms(attempt_of(sms()))
    assert slow.value.code == "timeout"


def test_a_lookup_with_wrong_credentials_stops_the_channel(settled_twilio: TwilioSandbox) -> None:
    with pytest.raises(ConfigurationError) as caught:
        twilio_sender(settled_twilio.url, token="wrong").find_sms(attempt_of(sms()))
    assert caught.value.code == "20003"
