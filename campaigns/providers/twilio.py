"""SMS through Twilio's official SDK (`twilio`), with every error code classified in one table.

The SDK gets an explicit timeout and never retries a create itself: retrying is the outbox's
job, and a blind SDK retry after a 5xx could text a patient twice. `TWILIO_API_BASE_URL`
(unset in production) points every Twilio host at a local server, as Twilio recommends.

A send whose answer was lost is looked up with `find_sms`: the Messages list filtered by `To`,
matched on the exact body and the creation time (see its docstring for why two queries).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageList  # noqa: F401 - loaded at start-up
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from campaigns.providers.twilio_http import PooledTwilioHttpClient
from campaigns.rules.keywords import Intent
from campaigns.rules.ports import (
    Attempt,
    ConfigurationError,
    InvalidAddressError,
    Lookup,
    LookupVerdict,
    OptedOutError,
    OutgoingSms,
    PermanentError,
    ProviderError,
    RetryableError,
    SendReceipt,
    UnknownOutcomeError,
)

# MessageList is imported above, at start-up, not lazily on each thread's first send: that
# import took hundreds of milliseconds between a rate-limit slot and its request.
# The SDK logs every request and its headers at INFO: too much for production logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


class ErrorAction(Enum):
    RETRY = "retry"  # nothing was sent: back off and try again
    GIVE_UP = "give_up"  # this message will never go as it is
    OPT_OUT = "opt_out"  # the patient opted out at Twilio or the carrier: suppress SMS
    INVALID_NUMBER = "invalid_number"  # mark the number invalid; fall back to email
    HALT = "halt"  # our account or sender is misconfigured: stop the channel, alert
    UNKNOWN = "unknown"  # it may have been sent: never resend blindly


#: docs/providers.md, "Error codes we classify": one row per code, for errors on create and in
#: Twilio's Advanced Opt-Out verdicts (the `OptOutType` of an incoming text), as the intents
#: they stand for.
ADVANCED_OPT_OUT = {"STOP": Intent.OPT_OUT, "START": Intent.RESUBSCRIBE, "HELP": Intent.HELP}

#: status callbacks alike.
TWILIO_ERRORS: dict[int, ErrorAction] = {
    20429: ErrorAction.RETRY,  # too many requests: "never processed and always safe to retry"
    30001: ErrorAction.RETRY,  # queue overflow
    30003: ErrorAction.RETRY,  # unreachable handset (retried a limited number of times)
    30008: ErrorAction.RETRY,  # unknown delivery error
    30500: ErrorAction.RETRY,  # Twilio internal error
    21610: ErrorAction.OPT_OUT,  # the recipient replied STOP to this sender
    30004: ErrorAction.OPT_OUT,  # blocked by the recipient or the carrier
    21211: ErrorAction.INVALID_NUMBER,  # not a valid phone number
    21614: ErrorAction.INVALID_NUMBER,  # not a mobile number
    21635: ErrorAction.INVALID_NUMBER,  # a landline
    30005: ErrorAction.INVALID_NUMBER,  # unknown or inactive handset
    30006: ErrorAction.INVALID_NUMBER,  # landline or unreachable carrier
    20003: ErrorAction.HALT,  # authentication failed
    20404: ErrorAction.HALT,  # wrong account or messaging service
    21408: ErrorAction.HALT,  # geo permissions not enabled for the destination
    21606: ErrorAction.HALT,  # From is not an SMS-capable number of the account
    21608: ErrorAction.HALT,  # trial account / unverified
    21612: ErrorAction.HALT,  # To/From cannot be routed (sender configuration)
    30002: ErrorAction.HALT,  # account suspended
    30032: ErrorAction.HALT,  # toll-free number not verified
    30034: ErrorAction.HALT,  # A2P 10DLC unregistered
    21617: ErrorAction.GIVE_UP,  # body over 1,600 characters
    30007: ErrorAction.GIVE_UP,  # filtered as spam: never resend the same content
}


def error_action(code: int | None, http_status: int | None) -> ErrorAction:
    """The action for a Twilio error code (or, without one, its HTTP status)."""
    if code is not None and code in TWILIO_ERRORS:
        return TWILIO_ERRORS[code]
    status = http_status if http_status is not None else code
    if status is not None and status >= 500:
        return ErrorAction.UNKNOWN  # the request reached Twilio: the message may exist
    if status in (401, 403):
        return ErrorAction.HALT
    if status == 429:
        return ErrorAction.RETRY
    return ErrorAction.GIVE_UP


_ERRORS: dict[ErrorAction, type[ProviderError]] = {
    ErrorAction.RETRY: RetryableError,
    ErrorAction.GIVE_UP: PermanentError,
    ErrorAction.OPT_OUT: OptedOutError,
    ErrorAction.INVALID_NUMBER: InvalidAddressError,
    ErrorAction.HALT: ConfigurationError,
    ErrorAction.UNKNOWN: UnknownOutcomeError,
}


def error_for(action: ErrorAction, code: str, detail: str) -> ProviderError:
    return _ERRORS[action](code, detail)


def lookup_error_for(code: int | None, http_status: int | None) -> ProviderError | None:
    """The error a failed lookup raises, through the same table as a send; None when Twilio
    refused the question itself (the lookup then answers UNSUPPORTED).

    A GET changes nothing at Twilio, so a 5xx (unknown for a send) is simply retried.
    """
    action = error_action(code, http_status)
    shown = str(code or http_status)
    if action in (ErrorAction.RETRY, ErrorAction.UNKNOWN):
        return RetryableError(shown, f"Twilio could not answer the lookup (HTTP {http_status})")
    if action is ErrorAction.HALT:
        return ConfigurationError(shown, f"Twilio refused our credentials (HTTP {http_status})")
    return None


#: Our clock and Twilio's may disagree: a match may be created this long before our start.
CLOCK_SKEW = timedelta(minutes=2)
#: A lookup reads at most this many messages to the number per query (newest first).
LOOKUP_LIMIT = 1000
LOOKUP_PAGE_SIZE = 50  # Twilio's default page


class TwilioSmsSender:
    name = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        status_callback: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        api_base_url: str | None = None,
        timeout: float = 10.0,
        max_connections: int = 100,
    ) -> None:
        self.account_sid, self._auth_token = account_sid, auth_token
        self.status_callback = status_callback
        self.from_, self.messaging_service_sid = from_, messaging_service_sid
        self.api_base_url, self.timeout = api_base_url, timeout
        # One connection pool for every sending thread of the process (urllib3 pools are
        # thread-safe); each thread builds its own light SDK client on top.
        self.http = PooledTwilioHttpClient(
            timeout=timeout, base_url=api_base_url, max_connections=max_connections
        )
        self._local = threading.local()

    def client(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            # A non-empty environment keeps TWILIO_EDGE/REGION in os.environ from rewriting hosts.
            client = Client(
                self.account_sid,
                self._auth_token,
                http_client=self.http,
                environment={"TWILIO_CLIENT": "campaigns"},
            )
            self._local.client = client
        return client

    def send_sms(self, message: OutgoingSms) -> SendReceipt:
        options: dict[str, Any] = {
            "to": message.to,
            "body": message.body,
            # Our id rides in the (signed) callback URL, so even a send whose answer was lost
            # (an unknown outcome) is matched when Twilio reports on it.
            "status_callback": f"{self.status_callback}?m={message.message_id}",
        }
        if self.messaging_service_sid:
            options["messaging_service_sid"] = self.messaging_service_sid
        if self.from_:
            options["from_"] = self.from_
        if message.expires_at is not None:
            left = int((message.expires_at - datetime.now(UTC)).total_seconds())
            options["validity_period"] = max(1, min(36000, left))
        try:
            created = self.client().messages.create(**options)
        except TwilioRestException as exc:
            raise error_for(
                error_action(exc.code, exc.status),
                str(exc.code or exc.status),
                f"HTTP {exc.status}",
            ) from None
        except NewConnectionError:
            # Refused, unreachable or unresolvable (a subclass of the connect timeout below,
            # so caught first): no byte of the request left.
            raise RetryableError("connection_refused", "could not connect to Twilio") from None
        except ConnectTimeoutError:
            raise RetryableError("connect_timeout", "could not reach Twilio in time") from None
        except SSLError:
            # The TLS handshake comes before the request: nothing was sent.
            raise RetryableError("tls_failed", "TLS handshake with Twilio failed") from None
        except ReadTimeoutError:
            # The request was sent and no answer came: Twilio may have accepted it.
            raise UnknownOutcomeError("timeout", "no answer from Twilio in time") from None
        except (ProtocolError, HTTPError, OSError):
            raise UnknownOutcomeError(
                "connection_lost", "the connection broke mid-request"
            ) from None
        return SendReceipt(self.name, str(created.sid))

    def find_sms(self, attempt: Attempt) -> Lookup:
        """Whether Twilio has the attempt's message: an outbound message to `attempt.to` with
        exactly `attempt.body`, created no earlier than `started_at` less CLOCK_SKEW.

        First the list Twilio documents for this (`DateSent>=YYYY-MM-DD`, a GMT day, from the
        day of that earliest time). A message Twilio accepted but has not sent yet (queued,
        accepted, scheduled) has no `date_sent`, so a DateSent filter cannot return it; when the
        first list has no match, the newest messages to the number are read unfiltered and
        searched the same way (all of them: one queued during the first list may be sent by
        the second). NOT_FOUND only when both were read to the end.
        """
        since = attempt.started_at.astimezone(UTC) - CLOCK_SKEW
        day = since.date().isoformat()
        try:
            # A str goes to Twilio as given: the SDK would send a datetime as
            # "YYYY-MM-DDTHH:MM:SSZ", while Twilio documents day granularity.
            sent, _ = self._messages_to(attempt.to, date_sent_after=day)
            match = _matching(sent, attempt.body, since)
            newest: list[Any] | None = None
            newest_more = False
            if match is None:
                newest, newest_more = self._messages_to(attempt.to)
                match = _matching(newest, attempt.body, since)
        except TwilioException as exc:
            return _refused_lookup(exc)
        except (HTTPError, OSError, ValueError) as exc:
            raise _lookup_transport_error(exc) from None
        asked = f"twilio: {len(sent)} messages to the number sent since {day}"
        if newest is not None:
            unsent = sum(1 for m in newest if m.date_sent is None)
            asked += f", {len(newest)} newest of any date ({unsent} not sent yet)"
        return _verdict(match, asked, more=newest_more)

    def _messages_to(self, to: str, **filters: Any) -> tuple[list[Any], bool]:
        """Up to LOOKUP_LIMIT messages to `to` (newest first), and whether there were more."""
        found = self.client().messages.list(
            to=to, limit=LOOKUP_LIMIT + 1, page_size=LOOKUP_PAGE_SIZE, **filters
        )
        return found[:LOOKUP_LIMIT], len(found) > LOOKUP_LIMIT


def _matching(messages: Iterable[Any], body: str, since: datetime) -> Any | None:
    for message in messages:
        outbound = str(message.direction or "").startswith("outbound")
        created = message.date_created
        if outbound and message.body == body and isinstance(created, datetime) and created >= since:
            return message
    return None


def _failure_of(exc: TwilioException) -> tuple[int | None, int | None]:
    """HTTP status and Twilio error code of a failed call. A list page that is not a 200
    raises a bare TwilioException("Unable to fetch page", response), not a
    TwilioRestException, so the code is read from the response body here."""
    if isinstance(exc, TwilioRestException):
        return exc.status, exc.code
    response = next((a for a in exc.args if isinstance(a, Response)), None)
    if response is None:
        return None, None
    try:
        payload = json.loads(response.text)
    except ValueError:
        payload = None
    code = payload.get("code") if isinstance(payload, dict) else None
    return response.status_code, code if isinstance(code, int) else None


def _refused_lookup(exc: TwilioException) -> Lookup:
    status, code = _failure_of(exc)
    if status is None:  # the SDK could not read a 200 page: not a passing fault
        return Lookup(LookupVerdict.UNSUPPORTED, evidence="twilio: the list could not be read")
    error = lookup_error_for(code, status)
    if error is not None:
        raise error from None
    return Lookup(
        LookupVerdict.UNSUPPORTED,
        error_code=str(code or status),
        evidence=f"twilio: the lookup was refused (HTTP {status}, code {code})",
    )


def _lookup_transport_error(exc: Exception) -> RetryableError:
    """A lookup that did not get its answer: asked again later."""
    if isinstance(exc, NewConnectionError):
        return RetryableError("connection_refused", "could not connect to Twilio")
    if isinstance(exc, ConnectTimeoutError):
        return RetryableError("connect_timeout", "could not reach Twilio in time")
    if isinstance(exc, ReadTimeoutError):
        return RetryableError("timeout", "no answer from Twilio in time")
    if isinstance(exc, ValueError):  # a page that is not JSON (a proxy's error page)
        return RetryableError("bad_response", "Twilio's answer could not be read")
    return RetryableError("connection_lost", "the lookup's connection broke")


def _verdict(match: Any, asked: str, *, more: bool) -> Lookup:
    if match is not None:
        return Lookup(
            LookupVerdict.FOUND,
            str(match.sid),
            str(match.status) if match.status is not None else None,
            str(match.error_code) if match.error_code is not None else None,
            evidence=f"{asked}; {match.sid} matched body and time",
        )
    if more:
        # More than LOOKUP_LIMIT to one number and none matched: an unread page could hold
        # it. (The unfiltered list, read whole, covers everything the dated one missed.)
        return Lookup(
            LookupVerdict.UNSUPPORTED,
            evidence=f"{asked}; none matched in the newest {LOOKUP_LIMIT}, the rest unread",
        )
    return Lookup(LookupVerdict.NOT_FOUND, evidence=f"{asked}; none matched body and time")
