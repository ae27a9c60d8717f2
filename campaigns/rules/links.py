"""Signed, tamper-evident tokens for links in messages: unsubscribe (email) and booking (SMS).

An unsubscribe token is base64url(JSON payload) + "." + base64url(HMAC-SHA256 truncated to 128
bits). A booking link has to fit in a 160-character text beside its message, so its token is
packed: purpose, patient id and expiry in 11 bytes plus a 64-bit MAC, 26 characters in all.
Payloads hold ids only, never contact details.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

BOOKING_LINK_LIFETIME = timedelta(days=14)
# purpose, patient id (high 16 bits, low 32 bits), expiry in minutes since the epoch
_BOOKING = struct.Struct(">BHII")
_BOOKING_PURPOSE = 0x42


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
        # Compared as bytes: a link typed with other characters is refused, never an error.
        if not body or not hmac.compare_digest(
            mac.encode("utf-8", "replace"), self._mac(body).encode()
        ):
            raise TokenError("the link is not valid")
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            raise TokenError("the link is not valid") from None
        if not isinstance(payload, dict) or payload.get("p") != purpose:
            raise TokenError("the link is not valid here")
        expiry = payload.get("x")
        if expiry is not None and now.timestamp() >= expiry:
            raise ExpiredTokenError("the link has expired")
        data: dict[str, Any] = payload["d"]
        return data

    def booking_token(self, patient_id: int, expires_at: datetime) -> str:
        minutes = int(expires_at.timestamp() // 60)
        packed = _BOOKING.pack(_BOOKING_PURPOSE, patient_id >> 32, patient_id & 0xFFFFFFFF, minutes)
        return _b64(packed + self._packed_mac(packed))

    def booking_url(self, patient_id: int, now: datetime) -> str:
        token = self.booking_token(patient_id, now + BOOKING_LINK_LIFETIME)
        return f"{self.public_url.rstrip('/')}/b/{token}"

    def longest_booking_url(self) -> str:
        """As long as any booking link this signer makes (tokens have a fixed length)."""
        return f"{self.public_url.rstrip('/')}/b/{'x' * (len(_b64(bytes(_BOOKING.size + 8))))}"

    def verify_booking(self, token: str, now: datetime) -> int:
        """The patient id a booking token was made for; raises TokenError or ExpiredTokenError."""
        return self.read_booking(token, now)[0]

    def read_booking(self, token: str, now: datetime) -> tuple[int, datetime]:
        """The patient id a booking token was made for, and when it was made (to the minute);
        raises TokenError or ExpiredTokenError."""
        try:
            raw = _unb64(token)
        except ValueError:
            raise TokenError("the link is not valid") from None
        size = _BOOKING.size
        mac = raw[size:]
        if len(raw) != size + 8 or not hmac.compare_digest(mac, self._packed_mac(raw[:size])):
            raise TokenError("the link is not valid")
        purpose, high, low, minutes = _BOOKING.unpack(raw[:size])
        if purpose != _BOOKING_PURPOSE:
            raise TokenError("the link is not valid here")
        expires_at = datetime.fromtimestamp(minutes * 60, UTC)
        if now >= expires_at:
            raise ExpiredTokenError("the link has expired")
        return int(high << 32 | low), expires_at - BOOKING_LINK_LIFETIME

    def unsubscribe_url(self, patient_id: int, message_id: int) -> str:
        token = self.sign("unsubscribe", {"patient": patient_id, "message": message_id})
        return f"{self.public_url.rstrip('/')}/u/{token}"

    def _packed_mac(self, packed: bytes) -> bytes:
        return hmac.new(self.secret, b"booking:" + packed, hashlib.sha256).digest()[:8]

    def _mac(self, body: str) -> str:
        digest = hmac.new(self.secret, body.encode("utf-8", "replace"), hashlib.sha256).digest()
        return _b64(digest[:16])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
