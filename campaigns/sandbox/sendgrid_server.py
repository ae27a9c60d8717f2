"""A SendGrid v3 Mail Send stand-in (docs/providers.md, "The sandboxes"), with signed Event
Webhook posts.

POST /v3/mail/send with `Authorization: Bearer <key>` and a JSON body: 202, an empty body and
`X-Message-Id`. Then a signed batch of events (processed, then delivered) goes to the events
URL. Magic recipients (the part before @):

| local part      | answer                                                         |
|-----------------|----------------------------------------------------------------|
| invalid-address | 400, errors[].field = personalizations.0.to.0.email            |
| too-large       | 413 content too large                                          |
| rate-limited    | 429 with X-RateLimit-* headers (reset in 1 s)                   |
| server-error    | 503                                                             |
| bounce          | 202, then a bounce event (type bounce, 5.1.1)                   |
| unsubscribed    | 202, then dropped: Unsubscribed Address                         |
| spam            | 202, then delivered and spamreport                              |
| slow            | answers after 30 s (a timeout)                                  |

Events are signed with ECDSA P-256 over timestamp + raw body, as SendGrid signs them; the
sandbox's key is a fixed test key (TEST_PUBLIC_KEY below is what SENDGRID_EVENT_PUBLIC_KEY
must hold). Never use it for anything real.

Email Activity: GET /v3/messages?query=...&limit=N lists accepted messages, newest first, with
their activity status (`processed`, then after the events' delay `delivered`, or
`not_delivered` for the bounce and unsubscribed recipients). The query forms understood are
`unique_args['<name>']="<value>"` (custom_args are stored as unique args), `msg_id="..."`,
`msg_id LIKE '<X-Message-Id>%'` and `to_email="..."`, each optionally in parentheses, joined by
AND. `activity=False` answers it as SendGrid does an account without the Email Activity add-on:
403 "access forbidden".

Faults (see `common`): a faulted send answers 429 with X-RateLimit-* headers, or the status
set with SendGrid's errors body; a slow one without `accept` answers 503.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from campaigns.sandbox.common import Handler, SandboxServer, our_message_id, post
from campaigns.sandbox.credentials import TEST_API_KEY

# A deterministic test key (test only; docs/providers.md, "Event Webhook").
_TEST_PRIVATE = ec.derive_private_key(
    0x1F2E3D4C5B6A79880123456789ABCDEF0123456789ABCDEF0123456789ABCDEF, ec.SECP256R1()
)
TEST_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE74gMjvgWiBeWwYjlcbAaxvcMUmJ0VtrkhnWO/9nGPd1c2"
    "8EeJIg6ElmCQqlYdblqiFT2S/+ayaM4ELgfFU9U5Q=="
)
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
#: SendGrid's answer to a key it does not know (a 401 on any endpoint).
BAD_KEY = {
    "errors": [
        {
            "field": None,
            "message": "The provided authorization grant is invalid, expired, or revoked",
        }
    ]
}
NO_ACTIVITY = {"errors": [{"field": None, "message": "access forbidden"}]}
NOT_DELIVERED = {"bounce", "unsubscribed"}  # the magic recipients whose mail never arrives
#: One clause of an Email Activity query (what the sandbox understands of the language).
CLAUSE = re.compile(
    r"""\s*(?P<open>\()?\s*(?:
        unique_args\[\s*'(?P<arg>[^']*)'\s*\]\s*=\s*"(?P<arg_value>[^"]*)"
      | msg_id\s+(?i:LIKE)\s+'(?P<like>[^']*)'
      | msg_id\s*=\s*"(?P<msg_id>[^"]*)"
      | to_email\s*=\s*"(?P<to_email>[^"]*)"
      | (?P<bare_args>unique_args\s*=)
    )\s*(?P<close>\))?\s*""",
    re.VERBOSE,
)
AND = re.compile(r"(?i:AND)\b")


def sign(body: bytes, timestamp: str, key: ec.EllipticCurvePrivateKey = _TEST_PRIVATE) -> str:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


class SendGridHandler(Handler):
    server: SendGridSandbox

    def do_POST(self) -> None:
        body = self.body()
        if self.route != "/v3/mail/send":
            self.reply_json(404, {"errors": [{"message": "not found"}]})
            return
        if not self._authorised():
            self.reply_json(401, BAD_KEY)
            return
        try:
            mail = json.loads(body)
            to = mail["personalizations"][0]["to"][0]["email"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.reply_json(400, {"errors": [{"message": "Bad Request"}]})
            return
        hold = self.inject(self.server.faults)
        if hold is None:
            return
        if self.server.latency:
            time.sleep(self.server.latency)
        local = to.partition("@")[0]
        if self._magic_refusal(local):
            return
        if local == "slow":
            time.sleep(30)
        message_id = secrets.token_urlsafe(16)
        args = _unique_args(mail)
        self.server.recorder.add(
            {
                "message_id": our_message_id(args.get("message_id")),
                "x_message_id": message_id,
                "to": to,
                "mail": mail,
                "received_at": time.time(),
            }
        )
        self.server.activity.add(message_id, to, mail, args)
        self.server.schedule_events(message_id, to, mail)
        if hold:
            time.sleep(hold)  # accepted, but the answer comes too late for the client
        self.reply(202, headers={"X-Message-Id": message_id})

    def _magic_refusal(self, local: str) -> bool:
        """Answer the documented error for a magic recipient; False for any other address."""
        if local == "invalid-address":
            field = "personalizations.0.to.0.email"
            message = "Does not contain a valid address."
            self.reply_json(400, {"errors": [{"message": message, "field": field}]})
        elif local == "too-large":
            self.reply_json(413, {"errors": [{"message": "content too large"}]})
        elif local == "rate-limited":
            self.fault_reply(429)
        elif local == "server-error":
            self.reply(503, b"")
        else:
            return False
        return True

    def api_get(self) -> None:
        if self.route != "/v3/messages":
            self.reply_json(404, {"errors": [{"field": None, "message": "not found"}]})
            return
        if not self._authorised():
            self.reply_json(401, BAD_KEY)
            return
        if not self.server.email_activity:
            self.reply_json(403, NO_ACTIVITY)
            return
        hold = self.inject(self.server.lookup_faults)
        if hold is None:
            return
        if self.server.latency or hold:
            time.sleep(self.server.latency + hold)
        params = self.query()
        try:
            limit = int(params.get("limit", "10"))
            if not 1 <= limit <= 1000:
                raise ValueError
        except ValueError:
            self.reply_json(400, _query_error("limit must be from 1 to 1000", "limit"))
            return
        try:
            wanted = parse_query(params.get("query", ""))
        except ValueError as exc:
            self.reply_json(400, _query_error(str(exc), "query"))
            return
        found = [m for m in self.server.activity.newest_first() if _matches(m, wanted)]
        self.reply_json(200, {"messages": [_public(m) for m in found[:limit]]})

    def _authorised(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.server.api_key}"

    def fault_reply(self, status: int) -> None:
        if status == 429:
            self.reply_json(
                429,
                {"errors": [{"field": None, "message": "too many requests"}]},
                headers={
                    "X-RateLimit-Limit": "600",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time()) + 1),
                },
            )
            return
        known = {s.value: s.phrase for s in HTTPStatus}
        phrase = known.get(status, "error").lower()
        self.reply_json(status, {"errors": [{"field": None, "message": phrase}]})


def _unique_args(mail: dict[str, Any]) -> dict[str, str]:
    """The message's custom_args (mail-wide, then its first personalization's), as strings."""
    merged: dict[str, str] = {}
    personalizations = mail.get("personalizations") or [{}]
    for args in (mail.get("custom_args"), personalizations[0].get("custom_args")):
        if isinstance(args, dict):
            merged.update({str(k): str(v) for k, v in args.items()})
    return merged


def _query_error(message: str, field: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field}]}


def parse_query(query: str) -> list[tuple[str, str, str]]:
    """An Email Activity query as (field, argument, value) conditions, all to hold (AND)."""
    conditions: list[tuple[str, str, str]] = []
    at = 0
    while query.strip():  # an empty query lists everything
        clause = CLAUSE.match(query, at)
        if clause is None or bool(clause["open"]) != bool(clause["close"]):
            raise ValueError(f"error parsing input at position {at}: syntax error")
        if clause["bare_args"]:
            raise ValueError("operator = is incompatible with MAP<STRING,STRING>, STRING")
        if clause["arg"] is not None:
            conditions.append(("unique_args", clause["arg"], clause["arg_value"]))
        elif clause["like"] is not None:
            conditions.append(("msg_id LIKE", "", clause["like"]))
        elif clause["msg_id"] is not None:
            conditions.append(("msg_id", "", clause["msg_id"]))
        else:
            conditions.append(("to_email", "", clause["to_email"]))
        at = clause.end()
        if at == len(query):
            break
        joined = AND.match(query, at)
        if joined is None:
            raise ValueError(f"error parsing input at position {at}: expected AND")
        at = joined.end()
    return conditions


def _matches(message: dict[str, Any], conditions: list[tuple[str, str, str]]) -> bool:
    for field, argument, value in conditions:
        if field == "unique_args" and message["_unique_args"].get(argument) != value:
            return False
        if field == "msg_id" and message["msg_id"] != value:
            return False
        if field == "msg_id LIKE" and not _like(value).fullmatch(message["msg_id"]):
            return False
        if field == "to_email" and message["to_email"].casefold() != value.casefold():
            return False
    return True


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE: % any run of characters, _ any one."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


class ActivityStore:
    """Email Activity's view of the accepted messages, in order; thread-safe.

    Each message is `processed` when accepted and reaches its final status when its events are
    due (the events' delay), read off that timeline whenever it is listed.
    """

    def __init__(self, step: float) -> None:
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self.step = step

    def add(self, x_message_id: str, to: str, mail: dict[str, Any], args: dict[str, str]) -> None:
        local = to.partition("@")[0]
        sender = mail.get("from")
        sender = sender if isinstance(sender, dict) else {}
        message = {
            # One per recipient, as SendGrid's msg_id: the X-Message-Id, then a per-recipient part.
            "msg_id": f"{x_message_id}.sandbox-0",
            "from_email": str(sender.get("email", "")),
            "subject": str(mail.get("subject", "")),
            "to_email": to,
            "_unique_args": args,
            "_created": time.time(),
            "_final": "not_delivered" if local in NOT_DELIVERED else "delivered",
        }
        with self._lock:
            self._messages.append(message)

    def newest_first(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            messages = list(reversed(self._messages))
        return [self._render(m, now) for m in messages]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def _render(self, message: dict[str, Any], now: float) -> dict[str, Any]:
        created = message["_created"]
        done = now >= created + self.step
        last = created + self.step if done else created
        return {
            **message,
            "status": message["_final"] if done else "processed",
            "opens_count": 0,  # no open or click tracking in our mail
            "clicks_count": 0,
            "last_event_time": datetime.fromtimestamp(int(last), UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
        }


class SendGridSandbox(SandboxServer):
    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = TEST_API_KEY,
        events_url: str | None = None,
        latency: float = 0.0,
        callback_delay: float = 0.2,
        activity: bool = True,
    ) -> None:
        super().__init__(port, SendGridHandler, latency=latency)
        self.api_key, self.events_url = api_key, events_url
        self.callback_delay = callback_delay
        self.email_activity = activity  # False: an account without the Email Activity add-on
        self.activity = ActivityStore(callback_delay)

    def clear(self) -> None:
        super().clear()
        self.activity.clear()

    def schedule_events(self, message_id: str, to: str, mail: dict[str, Any]) -> None:
        if not self.events_url:
            return
        args = mail["personalizations"][0].get("custom_args", {})
        local = to.partition("@")[0]
        outcome = {
            "bounce": [
                (
                    "bounce",
                    {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"},
                )
            ],
            "unsubscribed": [("dropped", {"reason": "Unsubscribed Address"})],
            "spam": [("delivered", {"response": "250 OK"}), ("spamreport", {})],
        }.get(local, [("delivered", {"response": "250 OK"})])
        events = [("processed", {}), *outcome]
        batch = [
            {
                "email": to,
                "timestamp": int(time.time()),
                "event": kind,
                "sg_event_id": secrets.token_urlsafe(12),
                "sg_message_id": f"{message_id}.sandbox-{n}",
                **extra,
                **args,
                "category": mail.get("categories", []),
            }
            for n, (kind, extra) in enumerate(events)
        ]
        url = self.events_url
        self.callbacks.later(self.callback_delay, lambda: self.post_events(url, batch))

    def post_events(self, url: str, events: list[dict[str, Any]]) -> None:
        body = json.dumps(events).encode()
        timestamp = str(int(time.time()))
        post(
            url,
            body,
            {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign(body, timestamp),
                TIMESTAMP_HEADER: timestamp,
            },
        )
