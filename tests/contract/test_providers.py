"""The contract every SMS and email provider meets; each new provider is added to PROVIDERS.

The real ones (Twilio, SendGrid, SMTP) run through their SDKs against the local servers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from campaigns.bootstrap import email_sender, sms_sender
from campaigns.providers.base import (
    EmailSender,
    InvalidAddressError,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    RetryableError,
    SendReceipt,
    SmsSender,
)
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.providers.outbox import OutboxEmailSender, OutboxSmsSender
from tests.conftest import make_settings
from tests.providers.conftest import (  # noqa: F401 - fixtures the real providers need
    sendgrid_sandbox,
    sendgrid_sender,
    twilio_sandbox,
    twilio_sender,
)
from tests.providers.test_smtp import sender as smtp_sender
from tests.providers.test_smtp import smtp_server  # noqa: F401 - a fixture

# Each maker gets pytest's `request`, to start the local server a real provider talks to.
SMS_PROVIDERS: dict[str, Callable[[pytest.FixtureRequest], Any]] = {
    "outbox": lambda _: OutboxSmsSender(),
    "fake": lambda _: FakeSmsSender(),
    "twilio": lambda request: twilio_sender(request.getfixturevalue("twilio_sandbox").url),
}
EMAIL_PROVIDERS: dict[str, Callable[[pytest.FixtureRequest], Any]] = {
    "outbox": lambda _: OutboxEmailSender(),
    "fake": lambda _: FakeEmailSender(),
    "sendgrid": lambda request: sendgrid_sender(request.getfixturevalue("sendgrid_sandbox").url),
    "smtp": lambda request: smtp_sender(*request.getfixturevalue("smtp_server")[1:]),
}


def sms(message_id: int = 1) -> OutgoingSms:
    return OutgoingSms(
        message_id,
        "+447400000001",
        "Santi: a test. Reply STOP to end",
        datetime(2030, 1, 1, tzinfo=UTC),
    )


def email(message_id: int = 1) -> OutgoingEmail:
    return OutgoingEmail(
        message_id,
        "a@example.com",
        "Subject",
        "<p>Hi</p>",
        "Hi",
        "leg-cramps:welcome",
        "https://x.example/u/token",
    )


@pytest.mark.parametrize("name", sorted(SMS_PROVIDERS))
def test_sms_provider_contract(name: str, request: pytest.FixtureRequest) -> None:
    provider: SmsSender = SMS_PROVIDERS[name](request)
    assert provider.name == name
    receipts = [provider.send_sms(sms(i)) for i in range(1, 51)]
    assert all(isinstance(r, SendReceipt) and r.provider == name for r in receipts)
    assert all(r.provider_id for r in receipts)
    assert len({r.provider_id for r in receipts}) == 50  # ids are unique: callbacks find rows


@pytest.mark.parametrize("name", sorted(EMAIL_PROVIDERS))
def test_email_provider_contract(name: str, request: pytest.FixtureRequest) -> None:
    provider: EmailSender = EMAIL_PROVIDERS[name](request)
    assert provider.name == name
    receipts = [provider.send_email(email(i)) for i in range(1, 51)]
    assert all(r.provider == name and r.provider_id for r in receipts)
    assert len({r.provider_id for r in receipts}) == 50


@pytest.mark.parametrize("setting", ["outbox", "fake"])
def test_settings_choose_the_provider(setting: str) -> None:
    settings = make_settings(sms_provider=setting, email_provider=setting)
    assert sms_sender(settings).name == setting
    assert email_sender(settings).name == setting


def test_the_fake_raises_classified_errors_on_cue_and_records_only_successes() -> None:
    fake = FakeSmsSender()
    fake.fail_next(RetryableError("20429", "slow down", retry_after=2.0))
    fake.fail_for("+447400000001", InvalidAddressError("21211", "invalid To"), times=1)
    with pytest.raises(RetryableError) as first:
        fake.send_sms(sms())
    assert first.value.retry_after == 2.0
    with pytest.raises(InvalidAddressError):
        fake.send_sms(sms())
    fake.send_sms(sms())
    assert [m.message_id for m in fake.sent] == [1]
    assert fake.calls == 3


def test_provider_errors_carry_their_code() -> None:
    error = ProviderError("21610", "recipient unsubscribed")
    assert (error.code, error.detail, str(error)) == (
        "21610",
        "recipient unsubscribed",
        "21610: recipient unsubscribed",
    )
