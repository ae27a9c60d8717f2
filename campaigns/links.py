"""Signed, tamper-evident tokens for links in messages (unsubscribe now; booking later).

A token is base64url(JSON payload) + "." + base64url(HMAC-SHA256 truncated to 128 bits). The
payload holds ids only, never contact details.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TokenError(ValueError):
    """A token that was altered, is for another purpose, or has expired."""


class ExpiredTokenError(TokenError):
    pass


@dataclass(frozen=True)
class LinkSigner:
    secret: bytes
    public_url: str

    def sign(self, purpose: str, data: dict[str, Any], expires_at: datetime | None = None) -> str:
        payload: dict[str, Any] = {"p": purpose, "d": data}
        if expires_at is not None:
            payload["x"] = int(expires_at.timestamp())
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._mac(body)}"

    def verify(self, purpose: str, token: str, now: datetime) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        if not body or not hmac.compare_digest(mac, self._mac(body)):
            raise TokenError("the link is not valid")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise TokenError("the link is not valid") from None
        if payload.get("p") != purpose:
            raise TokenError("the link is not valid here")
        expiry = payload.get("x")
        if expiry is not None and now.timestamp() >= expiry:
            raise ExpiredTokenError("the link has expired")
        data: dict[str, Any] = payload["d"]
        return data

    def unsubscribe_url(self, patient_id: int, message_id: int) -> str:
        token = self.sign("unsubscribe", {"patient": patient_id, "message": message_id})
        return f"{self.public_url.rstrip('/')}/u/{token}"

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest()[:16])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
