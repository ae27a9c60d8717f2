"""Security keys and passkeys (WebAuthn) as a second factor, with Duo's `webauthn` library.

The browser asks the authenticator to sign a challenge we made; we keep the challenge in the
session row until the answer comes back, check the answer's origin and relying-party id
against our public URL, and keep each credential's public key and signature counter. A
counter that goes backwards means a cloned authenticator and is refused.

WebAuthn needs a secure context and a domain name: `https://...`, or `http://localhost`
while developing. An address such as http://127.0.0.1 cannot hold passkeys (the UI says so).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from campaigns import audit
from campaigns.rules.errors import InputError
from campaigns.storage.db import Database
from campaigns.storage.models import StaffPasskey, StaffUser


class PasskeyError(ValueError):
    """An answer from the browser that does not prove what it should."""


@dataclass(frozen=True)
class RelyingParty:
    """Who the credentials are for: the host and origin of our public URL."""

    id: str
    name: str
    origin: str

    @classmethod
    def of(cls, public_url: str, name: str) -> RelyingParty:
        parts = urlsplit(public_url)
        return cls(parts.hostname or "", name, f"{parts.scheme}://{parts.netloc}")

    @property
    def usable(self) -> bool:
        """Browsers refuse an IP address as the relying party, and plain http elsewhere
        than localhost."""
        try:
            ipaddress.ip_address(self.id)
        except ValueError:
            return self.origin.startswith("https://") or self.id == "localhost"
        return False


@dataclass(frozen=True)
class Passkey:
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None


def listed(db: Database, user_id: int) -> list[Passkey]:
    with db.session() as session:
        rows = session.execute(
            select(StaffPasskey).where(StaffPasskey.user_id == user_id).order_by(StaffPasskey.id)
        ).scalars()
        return [Passkey(r.id, r.name, r.created_at, r.last_used_at) for r in rows]


def registration_options(
    db: Database, rp: RelyingParty, user_id: int
) -> tuple[dict[str, Any], str]:
    """What navigator.credentials.create() needs, and the challenge to keep."""
    with db.session() as session:
        user = session.get(StaffUser, user_id)
        assert user is not None
        existing = _credential_ids(session, user_id)
    challenge = secrets.token_bytes(32)
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=str(user.id).encode(),
        user_name=user.email,
        user_display_name=user.display_name,
        challenge=challenge,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
    )
    return json.loads(options_to_json(options)), bytes_to_base64url(challenge)


def finish_registration(
    db: Database,
    rp: RelyingParty,
    user_id: int,
    challenge: str | None,
    credential: dict[str, Any],
    name: str,
    now: datetime,
) -> Passkey:
    label = " ".join(name.split())[:100] or "Security key"
    if challenge is None:
        raise PasskeyError("no registration was started; try again")
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise PasskeyError(f"the security key's answer was not accepted ({exc})") from None
    with db.session() as session:
        user = session.get(StaffUser, user_id)
        assert user is not None
        key = StaffPasskey(
            user_id=user_id,
            credential_id=bytes_to_base64url(verified.credential_id),
            public_key=bytes_to_base64url(verified.credential_public_key),
            sign_count=verified.sign_count,
            name=label,
            created_at=now,
        )
        session.add(key)
        session.flush()
        audit.record(
            session,
            now,
            f"staff:{user.id}:{user.email}"[:128],
            "staff_2fa_enrolled",
            user=user_id,
            method="passkey",
        )
        return Passkey(key.id, key.name, key.created_at, None)


def authentication_options(
    db: Database, rp: RelyingParty, user_id: int
) -> tuple[dict[str, Any], str]:
    with db.session() as session:
        allowed = _credential_ids(session, user_id)
    challenge = secrets.token_bytes(32)
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allowed],
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    return json.loads(options_to_json(options)), bytes_to_base64url(challenge)


def finish_authentication(
    db: Database,
    rp: RelyingParty,
    user_id: int,
    challenge: str | None,
    credential: dict[str, Any],
    now: datetime,
) -> None:
    """Raises PasskeyError unless the answer is a valid signature by one of the user's keys."""
    if challenge is None:
        raise PasskeyError("no sign-in with a security key was started; try again")
    raw_id = credential.get("rawId") or credential.get("id")
    if not isinstance(raw_id, str):
        raise PasskeyError("the security key's answer has no credential id")
    with db.session() as session:
        key = session.execute(
            select(StaffPasskey)
            .where(StaffPasskey.user_id == user_id, StaffPasskey.credential_id == raw_id)
            .with_for_update()
        ).scalar_one_or_none()
        if key is None:
            raise PasskeyError("this security key is not registered to your account")
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=rp.id,
                expected_origin=rp.origin,
                credential_public_key=base64url_to_bytes(key.public_key),
                credential_current_sign_count=key.sign_count,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise PasskeyError(f"the security key's answer was not accepted ({exc})") from None
        key.sign_count = verified.new_sign_count
        key.last_used_at = now


def remove(db: Database, user_id: int, passkey_id: int, now: datetime, *, actor: str) -> None:
    with db.session() as session:
        key = session.get(StaffPasskey, passkey_id)
        if key is None or key.user_id != user_id:
            raise InputError("passkey", "no such security key on your account")
        session.delete(key)
        audit.record(session, now, actor, "passkey_removed", user=user_id, passkey=passkey_id)


def _credential_ids(session: Any, user_id: int) -> list[bytes]:
    rows = session.execute(
        select(StaffPasskey.credential_id).where(StaffPasskey.user_id == user_id)
    ).scalars()
    return [base64url_to_bytes(c) for c in rows]
