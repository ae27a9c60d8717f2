"""Faults injected over HTTP into the sandboxes, seen through the real senders and SDKs.

Each mode is what the send path must survive: a 429 storm (retry, nothing sent), 5xx, and the
two slow answers past the client's timeout, one where the provider accepted the message (the
lookup then finds it) and one where it did not (the lookup then finds nothing).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import pytest

from campaigns.providers.twilio import TwilioSmsSender
from campaigns.rules.ports import (
    Attempt,
    LookupVerdict,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)
from campaigns.sandbox.common import SandboxServer
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from campaigns.sandbox.sendgrid_server import SendGridHandler, SendGridSandbox
from campaigns.sandbox.twilio_server import TwilioSandbox
from tests.integration.processes import wait_until
from tests.providers.conftest import (
    closed_port,
    sandbox_call,
    sendgrid_sender,
    set_fault,
    twilio_sender,
)

E = TypeVar("E", bound=ProviderError)

TIMEOUT = 0.5  # the client's; a fault's delay outlasts it
DELAY = 1.0


class Provider:
    """One sandbox and its sender, with the same few verbs for both providers."""

    def __init__(self, name: str, sandbox: SandboxServer, timeout: float = TIMEOUT) -> None:
        self.name, self.sandbox = name, sandbox
        if isinstance(sandbox, TwilioSandbox):
            self.sms = twilio_sender(sandbox.url, timeout=timeout)
        else:
            self.mail = sendgrid_sender(sandbox.url, timeout=timeout)

    def message(self, message_id: int) -> OutgoingSms | OutgoingEmail:
        if self.name == "twilio":
            return OutgoingSms(
                message_id,
                "+447400000001",
                f"Santi: tip {message_id}. Reply STOP to end",
                datetime.now(UTC) + timedelta(hours=1),
            )
        return OutgoingEmail(
            message_id,
            "pat@example.com",
            "Your Santi leg-care tip",
            "<p>Hi</p>",
            f"Tip {message_id}",
            "leg-cramps:welcome",
            "https://clinic.example/u/TOKEN",
        )

    def send(self, message_id: int) -> SendReceipt:
        message = self.message(message_id)
        if isinstance(message, OutgoingSms):
            return self.sms.send_sms(message)
        return self.mail.send_email(message)

    def find(self, message_id: int, started_at: datetime) -> Any:
        message = self.message(message_id)
        if isinstance(message, OutgoingSms):
            return self.sms.find_sms(
                Attempt(message_id, message.to, message.body, None, started_at)
            )
        return self.mail.find_email(
            Attempt(message_id, message.to, message.text, message.subject, started_at)
        )

    def arrivals(self) -> Counter[int]:
        """How many times each of our messages reached the provider."""
        return Counter(m["message_id"] for m in self.sandbox.recorder.snapshot())


@pytest.fixture(params=["twilio", "sendgrid"])
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    sandbox: SandboxServer = (
        TwilioSandbox(0, callbacks=False) if request.param == "twilio" else SendGridSandbox(0)
    )
    sandbox.start()
    yield Provider(request.param, sandbox)
    sandbox.stop()


def raises(error: type[E], call: Callable[[], object]) -> E:
    with pytest.raises(error) as caught:
        call()
    return caught.value


def test_a_429_storm_is_retryable_on_every_call_and_sends_nothing(provider: Provider) -> None:
    set_fault(provider.sandbox.url, status=429)
    errors = [raises(RetryableError, partial(provider.send, i)) for i in range(5)]
    assert {e.code for e in errors} == {"20429" if provider.name == "twilio" else "429"}
    assert provider.arrivals() == Counter()
    sandbox_call(provider.sandbox.url + "/_sandbox/faults", "DELETE")
    provider.send(9)
    assert provider.arrivals() == Counter({9: 1})


def test_count_faults_that_many_sends_then_clears_itself(provider: Provider) -> None:
    shown = set_fault(provider.sandbox.url, status=503, count=2)
    assert shown == {"status": 503, "delay": 0.0, "accept": False, "count": 2, "fraction": 1.0}
    # A 5xx: Twilio may have taken it (unknown); SendGrid accepts only with a 202 (retry).
    expected = UnknownOutcomeError if provider.name == "twilio" else RetryableError
    raises(expected, lambda: provider.send(1))
    assert sandbox_call(provider.sandbox.url + "/_sandbox/faults", "GET")["count"] == 1
    raises(expected, lambda: provider.send(2))
    assert sandbox_call(provider.sandbox.url + "/_sandbox/faults", "GET") is None
    provider.send(3)
    assert provider.arrivals() == Counter({3: 1})


def test_count_holds_under_concurrent_sends(provider: Provider) -> None:
    set_fault(provider.sandbox.url, status=429, count=10)
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        try:
            provider.send(i)
            result = "sent"
        except RetryableError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(outcomes) == Counter({"refused": 10, "sent": 20})
    assert sum(provider.arrivals().values()) == 20


def test_accepted_but_answered_too_late_is_unknown_and_then_found(provider: Provider) -> None:
    """The provider took the message; only its answer outlived the client's timeout."""
    started = datetime.now(UTC)
    set_fault(provider.sandbox.url, delay=DELAY, accept=True, count=1)
    raises(UnknownOutcomeError, lambda: provider.send(5))
    assert provider.arrivals() == Counter({5: 1})  # recorded at arrival, before the answer
    found = provider.find(5, started)
    assert found.verdict is LookupVerdict.FOUND
    [recorded] = provider.sandbox.recorder.snapshot()
    assert found.provider_id == recorded.get("sid", recorded.get("x_message_id"))


def test_slow_and_not_accepted_is_unknown_and_then_not_found(provider: Provider) -> None:
    started = datetime.now(UTC)
    set_fault(provider.sandbox.url, delay=DELAY, count=1)
    raises(UnknownOutcomeError, lambda: provider.send(6))
    assert provider.arrivals() == Counter()
    assert provider.find(6, started).verdict is LookupVerdict.NOT_FOUND
    provider.send(6)  # so the resend is safe: the message arrives once
    assert provider.arrivals() == Counter({6: 1})


def test_slow_and_not_accepted_within_the_timeout_answers_the_outage() -> None:
    """A delay shorter than the client's timeout: Twilio then answers 500, SendGrid 503."""
    twilio, sendgrid = TwilioSandbox(0, callbacks=False), SendGridSandbox(0)
    for sandbox in (twilio, sendgrid):
        sandbox.start()
        set_fault(sandbox.url, delay=0.1, count=1)
    try:
        sms = raises(UnknownOutcomeError, lambda: Provider("twilio", twilio, 5.0).send(1))
        mail = raises(RetryableError, lambda: Provider("sendgrid", sendgrid, 5.0).send(1))
    finally:
        twilio.stop()
        sendgrid.stop()
    assert (sms.code, mail.code) == ("20500", "503")


def test_fraction_faults_only_that_share_of_sends(provider: Provider) -> None:
    set_fault(provider.sandbox.url, status=429, fraction=0.5)
    refused = 0
    for i in range(40):
        try:
            provider.send(i)
        except RetryableError:
            refused += 1
    assert 0 < refused < 40  # both happen: a 2 in 10^12 chance of failing by luck
    assert sum(provider.arrivals().values()) == 40 - refused
    set_fault(provider.sandbox.url, status=429, fraction=0.0)
    provider.send(99)


def test_faults_on_sends_leave_lookups_alone(provider: Provider) -> None:
    started = datetime.now(UTC)
    provider.send(1)
    set_fault(provider.sandbox.url, status=500)
    assert provider.find(1, started).verdict is LookupVerdict.FOUND


def test_a_fault_must_make_sense(provider: Provider) -> None:
    for wrong in (
        {},
        {"status": 42},
        {"status": 429, "accept": True},
        {"delay": -1},
        {"status": 429, "count": 0},
        {"status": 429, "fraction": 2},
        {"status": 429, "colour": "red"},
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            set_fault(provider.sandbox.url, **wrong)
        assert refused.value.code == 400, wrong
        assert "error" in json.loads(refused.value.read())
        refused.value.close()
    assert sandbox_call(provider.sandbox.url + "/_sandbox/faults", "GET") is None


def test_the_sandboxes_say_nothing_about_patients(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Callbacks that fail, clients that hang up mid-answer: nothing logged names a patient."""
    dead = f"http://127.0.0.1:{closed_port()}"
    twilio = TwilioSandbox(0, callback_delay=0.0)
    sendgrid = SendGridSandbox(0, callback_delay=0.0, events_url=f"{dead}/events")
    answers: list[int] = []

    class CountingHandler(SendGridHandler):
        """Counts the answers written (or tried: the client may have hung up)."""

        def reply(
            self,
            status: int,
            body: bytes = b"",
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            super().reply(status, body, content_type, headers)
            answers.append(status)

    sendgrid.RequestHandlerClass = CountingHandler
    twilio.start()
    sendgrid.start()
    try:
        sms = TwilioSmsSender(
            TEST_ACCOUNT_SID,
            TEST_AUTH_TOKEN,
            status_callback=f"{dead}/status",
            api_base_url=twilio.url,
            timeout=TIMEOUT,
            from_="+15005550006",
        )
        mail = Provider("sendgrid", sendgrid)
        text = Provider("twilio", twilio).message(1)
        assert isinstance(text, OutgoingSms)
        with caplog.at_level(logging.DEBUG):
            sms.send_sms(text)
            mail.send(1)
            for sandbox in (twilio, sendgrid):
                set_fault(sandbox.url, delay=DELAY, accept=True, count=1)
            raises(UnknownOutcomeError, lambda: mail.send(2))
            wait_until(
                lambda: twilio.callbacks.failures >= 2 and sendgrid.callbacks.failures >= 1,
                30,
                "the callbacks to be tried",
            )
            # The held answer to send 2 meets a closed connection: wait until it was written.
            wait_until(lambda: len(answers) >= 2, 30, "the held answer to be written")
    finally:
        twilio.stop()
        sendgrid.stop()
    said = caplog.text + "".join(capsys.readouterr())
    assert "sandbox callback failed" in said
    for private in ("+447400000001", "pat@example.com", "Santi: tip 1", "Tip 1"):
        assert private not in said
