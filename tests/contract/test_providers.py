"""The contract every SMS and email provider meets; each new provider is added to PROVIDERS.

The real ones (Twilio, SendGrid, SMTP) run through their SDKs against the local servers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaigns.bootstrap import email_sender, sms_sender
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.providers.local import LocalEmailSender, LocalSmsSender
from campaigns.rules.ports import (
    Attempt,
    EmailSender,
    InvalidAddressError,
    Lookup,
    LookupVerdict,
    OutgoingEmail,
    OutgoingSms,
    ProviderError,
    RetryableError,
    SendReceipt,
    SmsSender,
)
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
    "local": lambda _: LocalSmsSender(),
    "fake": lambda _: FakeSmsSender(),
    "twilio": lambda request: twilio_sender(request.getfixturevalue("twilio_sandbox").url),
}
EMAIL_PROVIDERS: dict[str, Callable[[pytest.FixtureRequest], Any]] = {
    "local": lambda _: LocalEmailSender(),
    "fake": lambda _: FakeEmailSender(),
    "sendgrid": lambda request: sendgrid_sender(request.getfixturevalue("sendgrid_sandbox").url),
    "smtp": lambda request: smtp_sender(*request.getfixturevalue("smtp_server")[1:]),
}


def sms(message_id: int = 1) -> OutgoingSms:
    # Each text its own: Twilio is asked by number, body and time, not by our id.
    return OutgoingSms(
        message_id,
        "+447400000001",
        f"Santi: test {message_id}. Reply STOP to end",
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


#: Providers that cannot be asked whether they took a message.
CANNOT_BE_ASKED = {"smtp"}


def sms_attempt(message: OutgoingSms, started_at: datetime) -> Attempt:
    return Attempt(message.message_id, message.to, message.body, None, started_at)


def email_attempt(message: OutgoingEmail, started_at: datetime) -> Attempt:
    return Attempt(message.message_id, message.to, message.text, message.subject, started_at)


def assert_found_as_sent(name: str, lookups: list[Lookup], receipts: list[SendReceipt]) -> None:
    """A message the provider accepted is FOUND under the receipt's id, or the provider
    cannot be asked at all; never NOT_FOUND, which would have it sent twice."""
    if name in CANNOT_BE_ASKED:
        assert {lookup.verdict for lookup in lookups} == {LookupVerdict.UNSUPPORTED}
        return
    assert [(lookup.verdict, lookup.provider_id) for lookup in lookups] == [
        (LookupVerdict.FOUND, receipt.provider_id) for receipt in receipts
    ]
    assert all(lookup.evidence for lookup in lookups)


@pytest.mark.parametrize("name", sorted(SMS_PROVIDERS))
def test_sms_provider_contract(name: str, request: pytest.FixtureRequest) -> None:
    provider: SmsSender = SMS_PROVIDERS[name](request)
    assert provider.name == name
    started = datetime.now(UTC)
    receipts = [provider.send_sms(sms(i)) for i in range(1, 51)]
    assert all(isinstance(r, SendReceipt) and r.provider == name for r in receipts)
    assert all(r.provider_id for r in receipts)
    assert len({r.provider_id for r in receipts}) == 50  # ids are unique: callbacks find rows
    lookups = [provider.find_sms(sms_attempt(sms(i), started)) for i in range(1, 51)]
    assert_found_as_sent(name, lookups, receipts)
    never = provider.find_sms(sms_attempt(sms(51), started))
    assert never.verdict in (LookupVerdict.NOT_FOUND, LookupVerdict.UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(EMAIL_PROVIDERS))
def test_email_provider_contract(name: str, request: pytest.FixtureRequest) -> None:
    provider: EmailSender = EMAIL_PROVIDERS[name](request)
    assert provider.name == name
    started = datetime.now(UTC)
    receipts = [provider.send_email(email(i)) for i in range(1, 51)]
    assert all(r.provider == name and r.provider_id for r in receipts)
    assert len({r.provider_id for r in receipts}) == 50
    lookups = [provider.find_email(email_attempt(email(i), started)) for i in range(1, 51)]
    assert_found_as_sent(name, lookups, receipts)
    never = provider.find_email(email_attempt(email(51), started - timedelta(hours=1)))
    assert never.verdict in (LookupVerdict.NOT_FOUND, LookupVerdict.UNSUPPORTED)


def test_the_fake_answers_lookups_and_fails_them_on_cue() -> None:
    fake = FakeSmsSender()
    started = datetime.now(UTC)
    receipt = fake.send_sms(sms(1))
    assert fake.find_sms(sms_attempt(sms(1), started)).provider_id == receipt.provider_id
    assert fake.find_sms(sms_attempt(sms(2), started)).verdict is LookupVerdict.NOT_FOUND
    fake.fail_lookup_next(RetryableError("503", "provider down"))
    with pytest.raises(RetryableError):
        fake.find_sms(sms_attempt(sms(1), started))
    fake.lookups_supported = False
    assert fake.find_sms(sms_attempt(sms(1), started)).verdict is LookupVerdict.UNSUPPORTED
    assert fake.lookups == 4


@pytest.mark.parametrize(
    ("setting", "name"), [("local", "local"), ("outbox", "local"), ("fake", "fake")]
)
def test_settings_choose_the_provider(setting: str, name: str) -> None:
    """ "outbox", the local provider's old name, still chooses it."""
    settings = make_settings(sms_provider=setting, email_provider=setting)
    assert sms_sender(settings).name == name
    assert email_sender(settings).name == name


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
