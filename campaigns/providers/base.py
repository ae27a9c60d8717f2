"""What the send path needs from an SMS or email provider, and the errors it must classify.

Every provider maps its own failures onto these classes, so delivery decides retry, give-up,
opt-out or stop in one place, whatever the provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingSms:
    message_id: int  # our scheduled message id: lets callbacks and logs find the row
    to: str  # E.164
    body: str
    expires_at: datetime | None = None  # no point delivering after this


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


class SmsSender(Protocol):
    name: str

    def send_sms(self, message: OutgoingSms) -> SendReceipt: ...


class EmailSender(Protocol):
    name: str

    def send_email(self, message: OutgoingEmail) -> SendReceipt: ...


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
