"""A SendGrid v3 Mail Send stand-in (PROVIDERS.md 5.4), with signed Event Webhook posts.

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
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from campaigns.sandbox.common import Handler, SandboxServer, post

TEST_API_KEY = "SG.sandbox.sandboxsecret"
# PROVIDERS.md 6.3's deterministic test key (test only).
_TEST_PRIVATE = ec.derive_private_key(
    0x1F2E3D4C5B6A79880123456789ABCDEF0123456789ABCDEF0123456789ABCDEF, ec.SECP256R1()
)
TEST_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE74gMjvgWiBeWwYjlcbAaxvcMUmJ0VtrkhnWO/9nGPd1c2"
    "8EeJIg6ElmCQqlYdblqiFT2S/+ayaM4ELgfFU9U5Q=="
)
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


def sign(body: bytes, timestamp: str, key: ec.EllipticCurvePrivateKey = _TEST_PRIVATE) -> str:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


class SendGridHandler(Handler):
    server: SendGridSandbox

    def do_POST(self) -> None:
        body = self.body()
        if self.path.rstrip("/") != "/v3/mail/send":
            self.reply_json(404, {"errors": [{"message": "not found"}]})
            return
        if self.headers.get("Authorization", "") != f"Bearer {self.server.api_key}":
            self.reply_json(
                401,
                {"errors": [{"message": "authorization required"}]},
            )
            return
        try:
            mail = json.loads(body)
            to = mail["personalizations"][0]["to"][0]["email"]
        except (ValueError, KeyError, IndexError, TypeError):
            self.reply_json(400, {"errors": [{"message": "Bad Request"}]})
            return
        if self.server.latency:
            time.sleep(self.server.latency)
        local = to.partition("@")[0]
        if local == "invalid-address":
            self.reply_json(
                400,
                {
                    "errors": [
                        {
                            "message": "Does not contain a valid address.",
                            "field": "personalizations.0.to.0.email",
                        }
                    ]
                },
            )
            return
        if local == "too-large":
            self.reply_json(413, {"errors": [{"message": "content too large"}]})
            return
        if local == "rate-limited":
            self.reply_json(
                429,
                {"errors": [{"message": "too many requests"}]},
                headers={
                    "X-RateLimit-Limit": "600",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int(time.time()) + 1),
                },
            )
            return
        if local == "server-error":
            self.reply(503, b"")
            return
        if local == "slow":
            time.sleep(30)
        message_id = secrets.token_urlsafe(16)
        self.server.recorder.add(
            {"message_id": message_id, "to": to, "mail": mail, "received_at": time.time()}
        )
        self.reply(202, headers={"X-Message-Id": message_id})
        self.server.schedule_events(message_id, to, mail)


class SendGridSandbox(SandboxServer):
    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str = TEST_API_KEY,
        events_url: str | None = None,
        latency: float = 0.0,
        callback_delay: float = 0.2,
    ) -> None:
        super().__init__(port, SendGridHandler, latency=latency)
        self.api_key, self.events_url = api_key, events_url
        self.callback_delay = callback_delay

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
