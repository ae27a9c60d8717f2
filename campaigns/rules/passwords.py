"""Staff passwords: argon2id hashes, the rules a new password must meet, one-time passwords.

Hashes use argon2-cffi's argon2id with its current recommended parameters; a hash made with
older parameters still verifies and is replaced at the next sign-in (`needs_rehash`). A new
password must be long enough and not one of the 10,000 most common passwords (the list ships
as data; see docs/operations.md, "Security", for its source).
"""

from __future__ import annotations

import gzip
import secrets
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from campaigns.rules.errors import InputError

MIN_LENGTH = 10
MAX_LENGTH = 256  # argon2 takes any length; a bound keeps a huge form field cheap to refuse
COMMON = Path(__file__).resolve().parents[1] / "data" / "common-passwords.txt.gz"
#: One-time passwords: no look-alike characters, read over the phone or from a terminal.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"

_hasher = PasswordHasher()
#: Verified against when the email is unknown, so both answers take the same time.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(stored: str | None, password: str) -> bool:
    """True when the password matches; an unknown account (None) costs the same time."""
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _hasher.check_needs_rehash(stored)


def check_new(password: str, *, email: str = "", field: str = "new_password") -> None:
    """Refuse a password that is too short, too long, common, or the account's email."""
    if len(password) < MIN_LENGTH:
        raise InputError(field, f"use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InputError(field, f"use at most {MAX_LENGTH} characters")
    folded = password.strip().lower()
    if folded in common_passwords():
        raise InputError(field, "this is one of the most common passwords; choose another")
    if email and folded in {email.lower(), email.split("@", maxsplit=1)[0].lower()}:
        raise InputError(field, "do not use your email address as your password")
    if len(set(folded)) < 4:
        raise InputError(field, "use more different characters")


def one_time() -> str:
    """A random password for a new account or a reset: 16 characters, about 79 bits."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip().lower() for line in lines if line.strip())
