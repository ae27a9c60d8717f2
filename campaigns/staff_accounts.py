"""Staff accounts: who may sign in, with which role, password and second factors.

Used by `campaigns users` and the admin's users page. Every change is one transaction with its
audit event; a change that takes access away (disable, a new password, a reset of the second
factor, a new role) ends the account's sessions in the same transaction, so a browser signed in
before it cannot act after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.rules import passwords, totp
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.roles import Role, parse_role
from campaigns.rules.secretbox import SealedSecretError, SecretBox
from campaigns.storage.db import Database
from campaigns.storage.models import (
    StaffPasskey,
    StaffRecoveryCode,
    StaffSession,
    StaffUser,
)

#: The purpose TOTP secrets are sealed for (campaigns.rules.secretbox).
TOTP_PURPOSE = "staff-totp"


@dataclass(frozen=True)
class StaffMember:
    id: int
    email: str
    display_name: str
    role: Role
    must_change_password: bool
    has_totp: bool
    passkeys: int
    disabled_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None

    @property
    def actor(self) -> str:
        """How the audit trail and the consent ledger name this person: id and email."""
        return f"staff:{self.id}:{self.email}"[:128]

    @property
    def has_second_factor(self) -> bool:
        return self.has_totp or self.passkeys > 0


@dataclass(frozen=True)
class TotpEnrollment:
    secret: str
    uri: str
    recovery_codes: list[str]


def normalise_email(value: str, field: str = "email") -> str:
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InputError(field, str(exc)) from None
    return checked.normalized.lower()


def member(session: Session, user: StaffUser) -> StaffMember:
    keys = session.execute(
        select(func.count()).select_from(StaffPasskey).where(StaffPasskey.user_id == user.id)
    ).scalar_one()
    return StaffMember(
        id=user.id,
        email=user.email,
        display_name=user.display_name,
        role=Role(user.role),
        must_change_password=user.must_change_password,
        has_totp=user.totp_secret_sealed is not None,
        passkeys=int(keys),
        disabled_at=user.disabled_at,
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


def find(session: Session, email: str, *, lock: bool = False) -> StaffUser | None:
    query = select(StaffUser).where(StaffUser.email == email.strip().lower())
    if lock:
        query = query.with_for_update()
    return session.execute(query).scalar_one_or_none()


def _get(session: Session, email: str) -> StaffUser:
    user = find(session, email, lock=True)
    if user is None:
        raise NotFoundError(f"no staff account with the email {email.strip().lower()}")
    return user


def end_sessions(session: Session, user_id: int, *, keep: str | None = None) -> int:
    """End every session of the account (but `keep`, the browser that made the change)."""
    query = delete(StaffSession).where(StaffSession.user_id == user_id)
    if keep is not None:
        query = query.where(StaffSession.id != keep)
    return int(session.execute(query).rowcount or 0)  # type: ignore[attr-defined]


def add(
    db: Database,
    email: str,
    role: str,
    now: datetime,
    *,
    actor: str,
    name: str = "",
    password: str | None = None,
) -> tuple[StaffMember, str | None]:
    """A new account. Without a password, a one-time password is made (and returned, to be
    shown once) that must be changed at the first sign-in."""
    address = normalise_email(email)
    try:
        chosen = parse_role(role)
    except ValueError as exc:
        raise InputError("role", str(exc)) from None
    display = " ".join(name.split()) or address.split("@")[0]
    if len(display) > 200:
        raise InputError("name", "use at most 200 characters")
    one_time = None
    if password is None:
        one_time = password = passwords.one_time()
    else:
        passwords.check_new(password, email=address, field="password")
    with db.session() as session:
        if find(session, address) is not None:
            raise InputError("email", f"{address} already has a staff account")
        user = StaffUser(
            email=address,
            display_name=display,
            role=chosen.value,
            password_hash=passwords.hash_password(password),
            must_change_password=one_time is not None,
            created_at=now,
            password_changed_at=now,
        )
        session.add(user)
        session.flush()
        audit.record(session, now, actor, "staff_user_added", user=user.id, role=chosen.value)
        return member(session, user), one_time


def list_all(db: Database) -> list[StaffMember]:
    with db.session() as session:
        users = session.execute(select(StaffUser).order_by(StaffUser.email)).scalars().all()
        return [member(session, user) for user in users]


def get_member(db: Database, user_id: int) -> StaffMember:
    with db.session() as session:
        user = session.get(StaffUser, user_id)
        if user is None:
            raise NotFoundError(f"no staff account {user_id}")
        return member(session, user)


def disable(db: Database, email: str, now: datetime, *, actor: str) -> StaffMember:
    with db.session() as session:
        user = _get(session, email)
        if user.disabled_at is not None:
            raise StateError(f"{user.email} is already disabled")
        user.disabled_at = now
        ended = end_sessions(session, user.id)
        audit.record(session, now, actor, "staff_user_disabled", user=user.id, sessions=ended)
        return member(session, user)


def enable(db: Database, email: str, now: datetime, *, actor: str) -> StaffMember:
    with db.session() as session:
        user = _get(session, email)
        if user.disabled_at is None:
            raise StateError(f"{user.email} is not disabled")
        user.disabled_at = None
        audit.record(session, now, actor, "staff_user_enabled", user=user.id)
        return member(session, user)


def set_role(db: Database, email: str, role: str, now: datetime, *, actor: str) -> StaffMember:
    try:
        chosen = parse_role(role)
    except ValueError as exc:
        raise InputError("role", str(exc)) from None
    with db.session() as session:
        user = _get(session, email)
        before = user.role
        if before == chosen.value:
            raise StateError(f"{user.email} is already {chosen.value}")
        user.role = chosen.value
        # A new role may need a second factor the old one did not: sign in again.
        ended = end_sessions(session, user.id)
        audit.record(
            session,
            now,
            actor,
            "staff_role_changed",
            user=user.id,
            before=before,
            after=chosen.value,
            sessions=ended,
        )
        return member(session, user)


def reset_password(db: Database, email: str, now: datetime, *, actor: str) -> str:
    """A new one-time password (returned, to be shown once); every session ends."""
    one_time = passwords.one_time()
    with db.session() as session:
        user = _get(session, email)
        user.password_hash = passwords.hash_password(one_time)
        user.must_change_password = True
        user.password_changed_at = now
        ended = end_sessions(session, user.id)
        audit.record(session, now, actor, "staff_password_reset", user=user.id, sessions=ended)
    return one_time


def change_password(
    db: Database,
    user_id: int,
    current: str | None,
    new: str,
    now: datetime,
    *,
    keep_session: str | None = None,
) -> None:
    """The user's own change. `current` is checked unless None (right after signing in with a
    one-time password). Every other session of the account ends."""
    with db.session() as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.id == user_id).with_for_update()
        ).scalar_one()
        if current is not None and not passwords.verify(user.password_hash, current):
            raise InputError("current_password", "this is not your current password")
        passwords.check_new(new, email=user.email)
        if passwords.verify(user.password_hash, new):
            raise InputError("new_password", "choose a password you have not just used")
        user.password_hash = passwords.hash_password(new)
        user.must_change_password = False
        user.password_changed_at = now
        ended = end_sessions(session, user.id, keep=keep_session)
        audit.record(
            session, now, _actor(user), "staff_password_changed", user=user.id, sessions=ended
        )


def check_password(db: Database, email: str, password: str, now: datetime) -> StaffMember | None:
    """The account, if the password is right and it is not disabled. Unknown emails cost the
    same time as wrong passwords. A hash made with older parameters is replaced."""
    address = email.strip().lower()
    with db.session() as session:
        user = find(session, address)
        if not passwords.verify(user.password_hash if user else None, password):
            return None
        assert user is not None
        if user.disabled_at is not None:
            return None
        if passwords.needs_rehash(user.password_hash):
            user.password_hash = passwords.hash_password(password)
        return member(session, user)


def signed_in(db: Database, user_id: int, now: datetime, *, method: str) -> None:
    with db.session() as session:
        user = session.get(StaffUser, user_id)
        if user is None:
            raise NotFoundError(f"no staff account {user_id}")
        user.last_login_at = now
        audit.record(session, now, _actor(user), "signed_in", user=user.id, method=method)


# -- second factors ----------------------------------------------------------------------------


def start_totp(box: SecretBox, email: str) -> tuple[str, str, str]:
    """A new secret, sealed, and its otpauth URI: (secret, sealed, uri)."""
    secret = totp.new_secret()
    return secret, box.seal(secret), totp.provisioning_uri(secret, email)


def enroll_totp(
    db: Database, box: SecretBox, email: str, now: datetime, *, actor: str
) -> TotpEnrollment:
    """For `campaigns users totp`: a secret replaces any earlier one; new recovery codes."""
    secret, sealed, uri = start_totp(box, normalise_email(email))
    with db.session() as session:
        user = _get(session, email)
        user.totp_secret_sealed = sealed
        user.totp_last_step = None
        codes = _replace_recovery_codes(session, user.id)
        audit.record(session, now, actor, "staff_2fa_enrolled", user=user.id, method="totp")
    return TotpEnrollment(secret, uri, codes)


def confirm_totp(
    db: Database, box: SecretBox, user_id: int, sealed: str, code: str, now: datetime
) -> list[str] | None:
    """Enrolment from the web: the first code proves the app holds the secret. Returns the
    new recovery codes (None: the code was wrong)."""
    try:
        secret = box.open(sealed)
    except SealedSecretError:
        return None
    step = totp.matching_step(secret, code, now, None)
    if step is None:
        return None
    with db.session() as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.id == user_id).with_for_update()
        ).scalar_one()
        user.totp_secret_sealed = sealed
        user.totp_last_step = step
        codes = _replace_recovery_codes(session, user.id)
        audit.record(session, now, _actor(user), "staff_2fa_enrolled", user=user.id, method="totp")
    return codes


def check_totp(db: Database, box: SecretBox, user_id: int, code: str, now: datetime) -> bool:
    """A code from the user's authenticator, accepted once."""
    with db.session() as session:
        user = session.execute(
            select(StaffUser).where(StaffUser.id == user_id).with_for_update()
        ).scalar_one()
        if user.totp_secret_sealed is None:
            return False
        try:
            secret = box.open(user.totp_secret_sealed)
        except SealedSecretError:
            return False  # sealed under an older secret key: reset-2fa, as the docs say
        step = totp.matching_step(secret, code, now, user.totp_last_step)
        if step is None:
            return False
        user.totp_last_step = step
        return True


def use_recovery_code(db: Database, user_id: int, code: str, now: datetime) -> bool:
    with db.session() as session:
        found = session.execute(
            update(StaffRecoveryCode)
            .where(
                StaffRecoveryCode.user_id == user_id,
                StaffRecoveryCode.code_hash == totp.recovery_hash(code),
                StaffRecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
        )
        used = bool(found.rowcount)  # type: ignore[attr-defined]
        if used:
            left = session.execute(
                select(func.count())
                .select_from(StaffRecoveryCode)
                .where(StaffRecoveryCode.user_id == user_id, StaffRecoveryCode.used_at.is_(None))
            ).scalar_one()
            user = session.get(StaffUser, user_id)
            assert user is not None
            audit.record(session, now, _actor(user), "recovery_code_used", user=user_id, left=left)
        return used


def recovery_codes_left(db: Database, user_id: int) -> int:
    with db.session() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(StaffRecoveryCode)
                .where(StaffRecoveryCode.user_id == user_id, StaffRecoveryCode.used_at.is_(None))
            ).scalar_one()
        )


def new_recovery_codes(db: Database, user_id: int, now: datetime) -> list[str]:
    with db.session() as session:
        user = session.get(StaffUser, user_id)
        if user is None:
            raise NotFoundError(f"no staff account {user_id}")
        if user.totp_secret_sealed is None and not _passkey_count(session, user_id):
            raise StateError("set up a second factor first")
        codes = _replace_recovery_codes(session, user_id)
        audit.record(session, now, _actor(user), "recovery_codes_renewed", user=user_id)
        return codes


def reset_2fa(db: Database, email: str, now: datetime, *, actor: str) -> StaffMember:
    """Remove the authenticator app, security keys and recovery codes (a lost phone); the
    person sets up a second factor again at the next sign-in where their role needs one."""
    with db.session() as session:
        user = _get(session, email)
        user.totp_secret_sealed = None
        user.totp_last_step = None
        keys = session.execute(delete(StaffPasskey).where(StaffPasskey.user_id == user.id))
        session.execute(delete(StaffRecoveryCode).where(StaffRecoveryCode.user_id == user.id))
        ended = end_sessions(session, user.id)
        audit.record(
            session,
            now,
            actor,
            "staff_2fa_reset",
            user=user.id,
            passkeys=int(keys.rowcount or 0),  # type: ignore[attr-defined]
            sessions=ended,
        )
        return member(session, user)


def _replace_recovery_codes(session: Session, user_id: int) -> list[str]:
    session.execute(delete(StaffRecoveryCode).where(StaffRecoveryCode.user_id == user_id))
    codes = totp.new_recovery_codes()
    session.add_all(
        StaffRecoveryCode(user_id=user_id, code_hash=totp.recovery_hash(code)) for code in codes
    )
    return codes


def _passkey_count(session: Session, user_id: int) -> int:
    return int(
        session.execute(
            select(func.count()).select_from(StaffPasskey).where(StaffPasskey.user_id == user_id)
        ).scalar_one()
    )


def _actor(user: StaffUser) -> str:
    return f"staff:{user.id}:{user.email}"[:128]
