"""A Twilio Messages API stand-in (PROVIDERS.md 4.5).

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
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
import urllib.parse
from functools import partial
from typing import Any

from twilio.request_validator import RequestValidator

from campaigns.sandbox.common import Handler, SandboxServer, post

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
TEST_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TEST_AUTH_TOKEN = "test_auth_token_0123456789abcdef"  # noqa: S105 - the sandbox's own
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

    def do_POST(self) -> None:
        match = MESSAGES.match(urllib.parse.urlsplit(self.path).path)
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
        self.server.recorder.add(
            {
                "sid": sid,
                "to": to,
                "from": form.get("From"),
                "body": form.get("Body", ""),
                "form": form,
                "received_at": received_at,
            }
        )
        self.reply_json(
            201,
            {
                "sid": sid,
                "account_sid": match.group(1),
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "num_media": "0",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "error_code": None,
                "error_message": None,
                "uri": f"/2010-04-01/Accounts/{match.group(1)}/Messages/{sid}.json",
            },
        )
        callback = form.get("StatusCallback")
        if callback and self.server.send_callbacks:
            self.server.schedule_callbacks(callback, sid, form)

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
