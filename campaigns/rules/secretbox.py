"""Secrets kept in the database encrypted with a key derived from CAMPAIGNS_SECRET_KEY.

Staff TOTP secrets must be readable by the service (to check a code) but never stored in
clear: they are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived by HKDF
from the service's secret, with a purpose label so the key serves nothing else. Changing
CAMPAIGNS_SECRET_KEY makes sealed secrets unreadable: staff then enrol their authenticator
again (`campaigns users reset-2fa`), as docs/operations.md says.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SealedSecretError(ValueError):
    """A sealed value that this key cannot open (another secret key, or altered)."""


class SecretBox:
    def __init__(self, secret_key: str, purpose: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"campaigns:{purpose}".encode(),
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SealedSecretError("sealed with another secret key, or altered") from None
