"""What the send path needs from an SMS or email provider, and the errors it must classify.

Every provider maps its own failures onto these classes, so delivery decides retry, give-up,
opt-out or stop in one place, whatever the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True)
class OutgoingSms:
    message_id: int  # our scheduled message id: lets callbacks and logs find the row
    to: str  # E.164
    body: str
    #: Not to be delivered after this: the message's expiry or the send window's close
    #: (campaigns.rules.send_rules.deliver_by), whichever is first.
    expires_at: datetime | None = None


@dataclass(frozen=True)
class OutgoingEmail:
    message_id: int
    to: str
    subject: str
    html: str
    text: str
    category: str  # "<campaign>:<step>", for provider statistics
    unsubscribe_url: str


@dataclass(frozen=True)
class SendReceipt:
    provider: str
    provider_id: str


class LookupVerdict(StrEnum):
    FOUND = "found"  # the provider has this message: it was accepted
    NOT_FOUND = "not_found"  # the provider's records were searched and it is not there
    UNSUPPORTED = "unsupported"  # this provider or account cannot be asked


@dataclass(frozen=True)
class Attempt:
    """A send whose answer we never got: what we asked the provider to deliver, and when."""

    message_id: int  # our scheduled message id (in Twilio's callback URL ?m=, SendGrid custom_args)
    to: str  # E.164 phone or email address
    body: str  # the SMS text, or the email's plain text
    subject: str | None  # email only
    started_at: datetime  # aware UTC: when the call was allowed to start


@dataclass(frozen=True)
class Lookup:
    """What the provider said when asked whether an attempt's message exists.

    `evidence` is one short line for staff and operators (what was asked, what came back); it
    never holds a phone number, an email address or a message body.
    """

    verdict: LookupVerdict
    provider_id: str | None = None  # Twilio SM sid / SendGrid X-Message-Id
    provider_status: str | None = None  # the provider's own status word (queued, delivered ...)
    error_code: str | None = None
    evidence: str = ""


class SmsSender(Protocol):
    name: str

    def send_sms(self, message: OutgoingSms) -> SendReceipt: ...

    def find_sms(self, attempt: Attempt) -> Lookup:
        """Whether the provider has the attempt's message. Raises RetryableError when it cannot
        be answered now (429, 5xx, unreachable, timeout), ConfigurationError when our
        credentials are refused; never an unclassified transport error."""
        ...


class EmailSender(Protocol):
    name: str

    def send_email(self, message: OutgoingEmail) -> SendReceipt: ...

    def find_email(self, attempt: Attempt) -> Lookup:
        """As `SmsSender.find_sms`, for email."""
        ...


class ProviderError(Exception):
    """A send that did not succeed; `code` is the provider's own error code."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class RetryableError(ProviderError):
    """Nothing was sent (rate limit, outage, timeout before the request left): try again later."""

    def __init__(self, code: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(code, detail)
        self.retry_after = retry_after


class PermanentError(ProviderError):
    """This message will never go as it is: give up on it."""


class InvalidAddressError(PermanentError):
    """The number or address cannot receive messages on this channel."""


class OptedOutError(PermanentError):
    """The recipient opted out at the provider: suppress the channel for them."""


class ConfigurationError(ProviderError):
    """Our account or settings are wrong: not the patient's fault; stop the channel and alert."""


class UnknownOutcomeError(ProviderError):
    """The request may have been accepted: never resend blindly, reconcile from callbacks."""
