"""A Twilio Messages API stand-in (docs/providers.md, "The sandboxes").

POST /2010-04-01/Accounts/{AccountSid}/Messages.json with HTTP Basic auth and a form body.
Magic `To` numbers (Twilio's test numbers, plus a few of ours):

| To           | answer                                                        |
|--------------|---------------------------------------------------------------|
| +15005550001 | 400, 21211 invalid number                                     |
| +15005550002 | 400, 21612 cannot route                                       |
| +15005550003 | 400, 21408 no geo permission                                  |
| +15005550004 | 400, 21610 unsubscribed recipient                             |
| +15005550009 | 400, 21614 not a mobile number                                |
| +15005550429 | 429, 20429 too many requests                                  |
| +15005550500 | 500 with an HTML body (a proxy failure)                       |
| +15005550908 | 201, then the callback says undelivered 30003 (unreachable)   |
| +15005550905 | 201, then undelivered 30005 (unknown handset)                 |
| +15005550906 | 201, then undelivered 30006 (landline)                        |
| +15005550910 | 201, then failed 21610 (opted out, Messaging Service path)    |
| +15005550999 | answers after 30 s (a timeout)                                |

Any other number is accepted (201), and a signed status callback goes to the request's
StatusCallback: `sent`, then `delivered`.

Each accepted message is kept as a Message resource whose status follows the same timeline
(`queued` until the first callback is due, then `sent` with a `date_sent`, then its final
status), whether or not callbacks are posted. The lookups Twilio documents answer from them:

- GET .../Messages.json: filters `To`, `From`, `DateSent`, `DateSent<`, `DateSent>` (a GMT day
  `YYYY-MM-DD` compares days: `DateSent>` is on or after it; a date-time compares instants;
  a message not sent yet has no date_sent and matches no DateSent filter), `PageSize`
  (default 50, at most 1000), `Page` and `PageToken`; newest first, with Twilio's paging
  fields (relative `next_page_uri` and friends, as the SDK expects).
- GET .../Messages/{Sid}.json: one message, or 404 with code 20404.

Faults (see `common`): a faulted send answers Twilio's error JSON for its status (429: code
20429; 5xx: code 20500 and the like), a slow one without `accept` answers 500.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import threading
import time
import urllib.parse
from datetime import UTC, date, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import partial
from typing import Any

from twilio.request_validator import RequestValidator

from campaigns.sandbox.common import Handler, SandboxServer, our_message_id, post
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
MESSAGE = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages/([A-Za-z0-9]{34})\.json$")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
#: List filters in the order Twilio's own paging URIs give them.
LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")
SYNC_ERRORS = {
    "+15005550001": (400, 21211, "The 'To' number is not a valid phone number."),
    "+15005550002": (400, 21612, "The 'To' phone number is not currently reachable."),
    "+15005550003": (400, 21408, "Permission to send an SMS has not been enabled."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (400, 21614, "'To' number is not a valid mobile number"),
    "+15005550429": (429, 20429, "Too Many Requests"),
}
ASYNC_ERRORS = {
    "+15005550908": ("undelivered", "30003"),
    "+15005550905": ("undelivered", "30005"),
    "+15005550906": ("undelivered", "30006"),
    "+15005550910": ("failed", "21610"),
}


class TwilioHandler(Handler):
    server: TwilioSandbox
    outage_status = 500

    def do_POST(self) -> None:
        match = MESSAGES.match(self.route)
        body = self.body()
        if not match:
            self.reply_json(404, _error(404, 20404, "The requested resource was not found"))
            return
        if not self._authorised(match.group(1)):
            self.reply_json(401, _error(401, 20003, "Authentication Error - invalid username"))
            return
        received_at = time.time()
        form = {
            k: v[0] for k, v in urllib.parse.parse_qs(body.decode(), keep_blank_values=True).items()
        }
        hold = self.inject(self.server.faults)
        if hold is None:
            return
        if self.server.latency:
            time.sleep(self.server.latency)
        to = form.get("To", "")
        if not to or not (form.get("From") or form.get("MessagingServiceSid")):
            self.reply_json(400, _error(400, 21604, "A 'To' and a 'From' are required"))
            return
        if to in SYNC_ERRORS:
            status, code, message = SYNC_ERRORS[to]
            self.reply_json(status, _error(status, code, message))
            return
        if to == "+15005550500":
            self.reply(500, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if to == "+15005550999":
            time.sleep(30)
        sid = "SM" + secrets.token_hex(16)
        callback = form.get("StatusCallback")
        self.server.recorder.add(
            {
                "sid": sid,
                "message_id": our_message_id(_callback_message_id(callback)),
                "to": to,
                "from": form.get("From"),
                "body": form.get("Body", ""),
                "form": form,
                "received_at": received_at,
            }
        )
        resource = self.server.store.add(sid, match.group(1), form, received_at)
        if callback and self.server.send_callbacks:
            self.server.schedule_callbacks(callback, sid, form)
        if hold:
            time.sleep(hold)  # accepted, but the answer comes too late for the client
        self.reply_json(201, resource)

    def api_get(self) -> None:
        path = self.route
        found = MESSAGES.match(path) or MESSAGE.match(path)
        if found is None:
            self.reply_json(404, _error(404, 20404, "The requested resource was not found"))
            return
        account = found.group(1)
        if not self._authorised(account):
            self.reply_json(401, _error(401, 20003, "Authentication Error - invalid username"))
            return
        hold = self.inject(self.server.lookup_faults)
        if hold is None:
            return
        if self.server.latency or hold:
            time.sleep(self.server.latency + hold)
        if found.re is MESSAGE:
            message = self.server.store.get(found.group(2))
            if message is None or message["account_sid"] != account:
                self.reply_json(
                    404, _error(404, 20404, f"The requested resource {path} was not found")
                )
                return
            self.reply_json(200, message)
            return
        try:
            page = self._page(account, self.query())
        except ValueError as exc:
            self.reply_json(400, _error(400, 20001, str(exc)))
            return
        self.reply_json(200, page)

    def _page(self, account: str, params: dict[str, str]) -> dict[str, Any]:
        """One page of the Messages list, newest first, shaped as Twilio shapes it."""
        filters = {name: params[name] for name in LIST_FILTERS if params.get(name)}
        bounds = {
            name: _date_filter(value)
            for name, value in filters.items()
            if name.startswith("DateSent")
        }
        size = min(_whole(params.get("PageSize"), "PageSize", DEFAULT_PAGE_SIZE, 1), MAX_PAGE_SIZE)
        number = _whole(params.get("Page"), "Page", 0, 0)
        rows = [
            m
            for m in self.server.store.newest_first(account)
            if all(
                m[field.lower()] == filters[field] for field in ("To", "From") if field in filters
            )
            and all(_sent_within(m, name, bound) for name, bound in bounds.items())
        ]
        token = params.get("PageToken", "")
        start = number * size
        if token:
            sids = [m["sid"] for m in rows]
            if token[2:] not in sids or token[:2] not in ("PA", "PB"):
                raise ValueError(f"PageToken {token} is not valid")
            at = sids.index(token[2:])
            start = at + 1 if token.startswith("PA") else max(0, at - size)
        items = [_public(m) for m in rows[start : start + size]]
        base = f"/2010-04-01/Accounts/{account}/Messages.json"

        def uri(page: int, page_token: str | None = None) -> str:
            query = [*filters.items(), ("PageSize", str(size)), ("Page", str(page))]
            if page_token:
                query.append(("PageToken", page_token))
            return f"{base}?{urllib.parse.urlencode(query)}"

        more = start + size < len(rows)
        return {
            "messages": items,
            "page": number,
            "page_size": size,
            "start": start,
            "end": start + max(len(items) - 1, 0),
            "uri": uri(number, token or None),
            "first_page_uri": uri(0),
            "next_page_uri": uri(number + 1, "PA" + items[-1]["sid"]) if more and items else None,
            "previous_page_uri": (
                uri(number - 1, "PB" + items[0]["sid"]) if start > 0 and items else None
            ),
        }

    def _authorised(self, account_sid: str) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, binascii.Error):
            return False
        return user == account_sid == self.server.account_sid and secrets.compare_digest(
            password, self.server.auth_token
        )

    def fault_reply(self, status: int) -> None:
        code = {401: 20003, 404: 20404, 429: 20429}.get(status, 20000 + status)
        message = "Too Many Requests" if status == 429 else f"sandbox fault: HTTP {status}"
        self.reply_json(status, _error(status, code, message))


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _callback_message_id(callback: str | None) -> str | None:
    """Our message id rides in the StatusCallback URL as `?m=`."""
    if not callback:
        return None
    return urllib.parse.parse_qs(urllib.parse.urlsplit(callback).query).get("m", [None])[0]


def _whole(value: str | None, name: str, default: int, least: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or int(value) < least:
        raise ValueError(f"{name} must be a whole number, {least} or more")
    return int(value)


def _date_filter(value: str) -> date | datetime:
    """A DateSent value: a GMT day (YYYY-MM-DD) or an instant (ISO 8601 or RFC 2822)."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        instant = datetime.fromisoformat(value)
    except ValueError:
        try:
            instant = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a date") from None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _sent_within(message: dict[str, Any], name: str, bound: date | datetime) -> bool:
    """Whether a message's date_sent passes one DateSent filter; unsent messages never do."""
    sent_at = message["_sent_at"]
    if sent_at is None:
        return False
    sent: date | datetime = sent_at
    if not isinstance(bound, datetime):
        sent = sent_at.date()  # a day: compare days (GMT), as Twilio documents
    if name == "DateSent>":
        return sent >= bound
    if name == "DateSent<":
        return sent <= bound
    return sent == bound


def _error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "status": status,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
    }


class TwilioSandbox(SandboxServer):
    def __init__(
        self,
        port: int = 0,
        *,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        latency: float = 0.0,
        callback_delay: float = 0.2,
        callbacks: bool = True,
    ) -> None:
        super().__init__(port, TwilioHandler, latency=latency)
        self.send_callbacks = callbacks
        self.account_sid, self.auth_token = account_sid, auth_token
        self.callback_delay = callback_delay
        self.validator = RequestValidator(auth_token)
        self.store = MessageStore(callback_delay)

    def clear(self) -> None:
        super().clear()
        self.store.clear()

    def schedule_callbacks(self, url: str, sid: str, form: dict[str, str]) -> None:
        final = ASYNC_ERRORS.get(form["To"], ("delivered", ""))
        for offset, (status, error) in enumerate((("sent", ""), final)):
            self.callbacks.later(
                self.callback_delay * (offset + 1),
                partial(self.callback, url, sid, form, status, error),
            )

    def callback(self, url: str, sid: str, form: dict[str, str], status: str, error: str) -> None:
        """POST a status callback signed the way Twilio signs it (X-Twilio-Signature)."""
        params = {
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": self.account_sid,
            "To": form["To"],
            "ApiVersion": "2010-04-01",
        }
        if form.get("From"):
            params["From"] = form["From"]
        if form.get("MessagingServiceSid"):
            params["MessagingServiceSid"] = form["MessagingServiceSid"]
        if error:
            params["ErrorCode"] = error
        signature = self.validator.compute_signature(url, params)
        post(
            url,
            urllib.parse.urlencode(params).encode(),
            {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature},
        )


class MessageStore:
    """The Message resources the sandbox accepted, in order; thread-safe.

    A message's status is read off its timeline when it is shown: `queued` until its first
    callback is due, `sent` until the second, then its final status. Nothing is scheduled for
    it, so keeping resources costs a busy sandbox nothing per message but the memory.
    """

    def __init__(self, step: float) -> None:
        self._lock = threading.Lock()
        self._messages: dict[str, dict[str, Any]] = {}
        self.step = step

    def add(
        self, sid: str, account_sid: str, form: dict[str, str], created: float
    ) -> dict[str, Any]:
        body = form.get("Body", "")
        final, error = ASYNC_ERRORS.get(form["To"], ("delivered", ""))
        message = {
            "sid": sid,
            "account_sid": account_sid,
            "to": form["To"],
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "body": body,
            "num_segments": str(1 if len(body) <= 160 else math.ceil(len(body) / 153)),
            "_created": created,
            "_final": (final, int(error) if error else None),
        }
        with self._lock:
            self._messages[sid] = message
        return self._render(message, -math.inf)  # as created: queued, as Twilio answers a POST

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            message = self._messages.get(sid)
        return self._render(message, time.time()) if message else None

    def newest_first(self, account_sid: str) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            messages = [m for m in self._messages.values() if m["account_sid"] == account_sid]
        # dicts keep insertion order: reversed is newest first, ties included.
        return [self._render(m, now, internal=True) for m in reversed(messages)]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def _render(
        self, message: dict[str, Any], now: float, *, internal: bool = False
    ) -> dict[str, Any]:
        created = message["_created"]
        status, error_code = "queued", None
        sent_at = updated = None
        if now >= created + self.step:
            status, sent_at = "sent", created + self.step
            updated = sent_at
        if now >= created + 2 * self.step:
            (status, error_code), updated = message["_final"], created + 2 * self.step
        sid, account = message["sid"], message["account_sid"]
        shown = {
            "sid": sid,
            "account_sid": account,
            "api_version": "2010-04-01",
            "to": message["to"],
            "from": message["from"],
            "messaging_service_sid": message["messaging_service_sid"],
            "body": message["body"],
            "status": status,
            "direction": "outbound-api",
            "num_segments": message["num_segments"],
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": error_code,
            "error_message": None if error_code is None else f"sandbox error {error_code}",
            "date_created": _rfc2822(created),
            "date_sent": _rfc2822(sent_at),
            "date_updated": _rfc2822(updated if updated is not None else created),
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json",
                "feedback": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Feedback.json",
            },
        }
        if internal:  # for the list's filters; taken out before it is answered
            shown["_sent_at"] = None if sent_at is None else datetime.fromtimestamp(sent_at, UTC)
        return shown


def _rfc2822(moment: float | None) -> str | None:
    """Twilio's timestamps: "Mon, 16 Aug 2010 03:45:01 +0000" (GMT, whole seconds)."""
    if moment is None:
        return None
    return format_datetime(datetime.fromtimestamp(int(moment), UTC))
