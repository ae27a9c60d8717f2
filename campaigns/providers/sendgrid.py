"""Email through SendGrid's official SDK (`sendgrid`): multipart text + HTML, one-click
unsubscribe headers, our message id in custom_args, no open or click tracking.

Errors: 400/413 permanent (a bad recipient address marks the address invalid), 401/403 stop
the channel and alert, 429 retry after X-RateLimit-Reset, 5xx retry; a timeout after the
request left is an unknown outcome, never resent blindly.

A send whose answer was lost is looked up in the Email Activity API (`find_email`), a paid
add-on of the account: without it every lookup is UNSUPPORTED.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
from datetime import UTC, datetime
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from campaigns.rules.ports import (
    Attempt,
    ConfigurationError,
    InvalidAddressError,
    Lookup,
    LookupVerdict,
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


#: Seconds a message SendGrid accepted may take to show in Email Activity. SendGrid documents
#: no figure; until this has passed an empty answer proves nothing and is asked again later.
ACTIVITY_LAG_SECONDS = 600.0
#: Messages one lookup asks for: ours carry a unique id, so more than one is already unusual.
LOOKUP_LIMIT = 10
#: What SendGrid answers on /v3/messages for an account or key without Email Activity access
#: (sendgrid-csharp#689: 400; sendgrid-nodejs#1003: on a free account), with a key that sends.
_NO_ACTIVITY_ACCESS = "authorization required"


def activity_query(message_id: int) -> str:
    """The Email Activity query for our id: custom_args are stored, and queried, as unique_args.

    The subscript form is the one SendGrid accepts (`unique_args="..."`, as its query reference
    shows, is refused: "operator = is incompatible with MAP<STRING,STRING>, STRING"). It has no
    space, so the SDK's form encoding (spaces as "+") cannot change it.
    """
    return f"unique_args['message_id']=\"{int(message_id)}\""


def _lookup_refusal(exc: HTTPError) -> ProviderError | Lookup:
    """A refused lookup: an error to raise, or the UNSUPPORTED answer.

    403 ("access forbidden": the key lacks the Email Activity scope or the account the add-on),
    404 (no such API here), and 400/401 saying "authorization required" (what SendGrid answers
    an account without the add-on, though the same key sends) mean this account cannot be
    asked: UNSUPPORTED. Any other 401 is the key itself refused: ConfigurationError, as for a
    send. Another 400 is a query SendGrid would not run: UNSUPPORTED, an operator checks.
    429 and 5xx: RetryableError.
    """
    status = int(exc.status_code)
    if status == 429:
        return RetryableError(str(status), "rate limited", retry_after=_reset_in(exc))
    if status >= 500:
        return RetryableError(str(status), "SendGrid could not answer the lookup")
    said = {str(e.get("message", "")).lower() for e in _errors(exc)}
    no_access = status in (403, 404) or (status in (400, 401) and _NO_ACTIVITY_ACCESS in said)
    if status == 401 and not no_access:
        return ConfigurationError(str(status), "SendGrid refused our credentials")
    return Lookup(
        LookupVerdict.UNSUPPORTED,
        error_code=str(status),
        evidence=f"sendgrid: Email Activity answered HTTP {status} "
        + ("(no Email Activity access)" if no_access else "(query refused)"),
    )


class SendGridEmailSender:
    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        from_email: str,
        from_name: str,
        host: str,
        timeout: float = 10.0,
        activity_lag: float = ACTIVITY_LAG_SECONDS,
    ) -> None:
        self.from_email, self.from_name = from_email, from_name
        self.activity_lag = activity_lag
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
            # No tracking pixels or rewritten links in health emails (docs/clinical-content.md).
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

    def find_email(self, attempt: Attempt) -> Lookup:
        """Whether SendGrid has the attempt's message: Email Activity messages carrying our id
        in custom_args (`GET /v3/messages?query=unique_args['message_id']="<id>"`), sent to
        `attempt.to`. The recipient is compared here, not in the query, so that another
        installation's message with the same id on a shared account is not taken for ours.

        FOUND gives the X-Message-Id (msg_id up to its first "."). An empty answer is NOT_FOUND
        only once `activity_lag` has passed since `started_at`; before that it raises
        RetryableError, because Email Activity shows a message some time after SendGrid accepts
        it. See `_lookup_refusal` for accounts that cannot be asked.
        """
        query = activity_query(attempt.message_id)
        try:
            response = self._client.client.messages.get(
                query_params={"query": query, "limit": LOOKUP_LIMIT}
            )
            payload = json.loads(response.body or b"{}")
        except HTTPError as exc:
            refusal = _lookup_refusal(exc)
            if isinstance(refusal, ProviderError):
                raise refusal from None
            return refusal
        except urllib.error.URLError:
            raise RetryableError("connection_error", "could not reach SendGrid") from None
        except (TimeoutError, OSError, http.client.HTTPException):
            raise RetryableError("connection_lost", "no answer from SendGrid") from None
        except ValueError:
            raise RetryableError("bad_response", "SendGrid's answer could not be read") from None
        listed = payload.get("messages") if isinstance(payload, dict) else None
        found = [m for m in listed if isinstance(m, dict)] if isinstance(listed, list) else []
        ours = [m for m in found if str(m.get("to_email", "")).casefold() == attempt.to.casefold()]
        asked = f"sendgrid: {len(found)} messages with our id, {len(ours)} to the address"
        if ours:
            match = ours[0]
            msg_id = str(match.get("msg_id") or "")
            return Lookup(
                LookupVerdict.FOUND,
                msg_id.split(".", 1)[0] or None,
                str(match["status"]) if match.get("status") else None,
                evidence=f"{asked}; {msg_id} is {match.get('status')}",
            )
        if len(found) >= LOOKUP_LIMIT:
            return Lookup(
                LookupVerdict.UNSUPPORTED,
                evidence=f"{asked}; the answer was full, the rest unread",
            )
        waited = (datetime.now(UTC) - attempt.started_at).total_seconds()
        if waited < self.activity_lag:
            raise RetryableError(
                "not_yet_listed",
                "Email Activity may not list the message yet",
                retry_after=self.activity_lag - waited,
            )
        return Lookup(LookupVerdict.NOT_FOUND, evidence=f"{asked}; none matched")
