"""Time-based one-time passwords (RFC 6238) and recovery codes: the rules, no storage.

A code is accepted for the current 30-second step and one step either side (a phone's clock
may be a little off), and each step once only: the caller keeps the last step used and a
code for that step or an earlier one is refused, so a code seen over someone's shoulder
cannot be used again. Recovery codes are random, shown once, and stored as hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp

ISSUER = "Santi patient messages"
DIGITS = 6
STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, email: str, issuer: str = ISSUER) -> str:
    """The otpauth:// URI an authenticator app reads (from a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def matching_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step the code belongs to, if it is valid now and newer than `last_step`."""
    code = "".join(code.split())
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = totp.timecode(now)
    for offset in (0, -1, 1):
        step = current + offset
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes(count: int = RECOVERY_CODES) -> list[str]:
    """Codes like `k7mq-2xha-9c`: about 50 bits each, easy to read back from paper."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
        codes.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return codes


def recovery_hash(code: str) -> str:
    """How a recovery code is stored and looked up (whitespace, dashes and case ignored).
    A plain hash is enough: the codes are random, not chosen by people."""
    folded = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(folded.encode()).hexdigest()
