"""Email through SendGrid's official SDK (`sendgrid`): multipart text + HTML, one-click
unsubscribe headers, our message id in custom_args, no open or click tracking.

Errors: 400/413 permanent (a bad recipient address marks the address invalid), 401/403 stop
the channel and alert, 429 retry after X-RateLimit-Reset, 5xx retry; a timeout after the
request left is an unknown outcome, never resent blindly.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from campaigns.providers.base import (
    ConfigurationError,
    InvalidAddressError,
    OutgoingEmail,
    PermanentError,
    ProviderError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)

# The HTTP client logs request and response bodies at DEBUG: they hold patient data.
logging.getLogger("python_http_client").setLevel(logging.WARNING)


def classify_http_error(exc: HTTPError) -> ProviderError:
    status = int(exc.status_code)
    code = str(status)
    if status == 400:
        fields = [str(e.get("field", "")) for e in _errors(exc)]
        if any(f.startswith("personalizations") and f.endswith("email") for f in fields):
            return InvalidAddressError(code, "the recipient address was refused")
        return PermanentError(code, "request refused: " + ", ".join(filter(None, fields)))
    if status == 413:
        return PermanentError(code, "message too large")
    if status in (401, 403):
        return ConfigurationError(code, "SendGrid refused our credentials or sender")
    if status == 429:
        return RetryableError(code, "rate limited", retry_after=_reset_in(exc))
    if status >= 500:
        return RetryableError(code, "SendGrid server error")
    return PermanentError(code, "unexpected response")


def _errors(exc: HTTPError) -> list[dict[str, Any]]:
    try:
        body = json.loads(exc.body or b"{}")
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _reset_in(exc: HTTPError) -> float | None:
    headers = exc.headers or {}
    reset = headers.get("X-RateLimit-Reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset else None
    except ValueError:
        return None


class SendGridEmailSender:
    name = "sendgrid"

    def __init__(
        self, api_key: str, *, from_email: str, from_name: str, host: str, timeout: float = 10.0
    ) -> None:
        self.from_email, self.from_name = from_email, from_name
        self._client = SendGridAPIClient(api_key=api_key, host=host)
        self._client.client.timeout = timeout  # the SDK's default is to wait forever

    def payload(self, message: OutgoingEmail) -> dict[str, Any]:
        return {
            "from": {"email": self.from_email, "name": self.from_name},
            "personalizations": [
                {
                    "to": [{"email": message.to}],
                    # Ids only (SendGrid keeps custom_args as non-PII); echoed in every event.
                    "custom_args": {"message_id": str(message.message_id)},
                }
            ],
            "subject": message.subject,
            "content": [
                {"type": "text/plain", "value": message.text},
                {"type": "text/html", "value": message.html},
            ],
            "categories": [message.category],
            "headers": {
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            # No tracking pixels or rewritten links in health emails (CLINICAL 5.4).
            "tracking_settings": {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
                "subscription_tracking": {"enable": False},
            },
        }

    def send_email(self, message: OutgoingEmail) -> SendReceipt:
        try:
            response = self._client.send(self.payload(message))
        except HTTPError as exc:
            raise classify_http_error(exc) from None
        except urllib.error.URLError:
            # Refused, unresolvable or timed out while connecting: nothing was sent.
            raise RetryableError("connection_error", "could not reach SendGrid") from None
        except TimeoutError:
            raise UnknownOutcomeError("timeout", "no answer from SendGrid in time") from None
        provider_id = response.headers.get("X-Message-Id") if response.headers else None
        if not provider_id:
            raise UnknownOutcomeError("no_message_id", "accepted without an X-Message-Id")
        return SendReceipt(self.name, str(provider_id))
