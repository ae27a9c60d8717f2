"""Staff sessions: server-side rows behind a random cookie token.

A browser holds a 256-bit random token; the database holds only its SHA-256, so neither a
copy of the database nor of the logs signs anyone in. A session ends after
`session_idle_minutes` without a request and `session_absolute_hours` after sign-in whatever
the activity, and at once when its row is deleted (sign-out, a disabled account, a new
password). Each session has its own CSRF token.

Signing in is a sequence of stages (password, then the second factor, then a forced password
change or second-factor setup where needed); only an `active` session reaches the staff pages.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update

from campaigns.rules.roles import Role
from campaigns.settings import Settings
from campaigns.staff_accounts import StaffMember, member
from campaigns.storage.db import Database
from campaigns.storage.models import StaffSession, StaffUser

#: A session's last-seen time is written at most this often (not on every request).
TOUCH_EVERY = timedelta(seconds=60)


class Stage(StrEnum):
    SECOND_FACTOR = "second_factor"
    CHANGE_PASSWORD = "change_password"  # noqa: S105 - a stage, not a password
    SETUP_2FA = "setup_2fa"
    ACTIVE = "active"


def next_stage(
    *, factor_checked: bool, has_factor: bool, must_change_password: bool, factor_required: bool
) -> Stage:
    """Where a browser goes after the password (and after each later stage): the second factor
    if the account has one, then a forced password change, then second-factor setup where the
    role needs one and the account has none."""
    if has_factor and not factor_checked:
        return Stage.SECOND_FACTOR
    if must_change_password:
        return Stage.CHANGE_PASSWORD
    if factor_required and not has_factor:
        return Stage.SETUP_2FA
    return Stage.ACTIVE


@dataclass(frozen=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta

    @classmethod
    def of(cls, settings: Settings) -> Timeouts:
        return cls(
            idle=timedelta(minutes=settings.session_idle_minutes),
            absolute=timedelta(hours=settings.session_absolute_hours),
        )


@dataclass(frozen=True)
class Current:
    """The signed-in browser of this request."""

    id: str  # the token's hash
    user: StaffMember
    stage: Stage
    csrf_token: str
    challenge: str | None
    pending_totp_sealed: str | None
    flash: dict[str, Any] | None

    @property
    def role(self) -> Role:
        return self.user.role


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def start(db: Database, user_id: int, stage: Stage, now: datetime, timeouts: Timeouts) -> str:
    """A new session; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    with db.session() as session:
        session.add(
            StaffSession(
                id=token_hash(token),
                user_id=user_id,
                stage=stage.value,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timeouts.absolute,
            )
        )
    return token


def load(
    db: Database, token: str, now: datetime, timeouts: Timeouts, *, take_flash: bool = False
) -> Current | None:
    """The session behind a cookie, if it is still valid; an expired one is deleted."""
    if not token or len(token) > 128:
        return None
    key = token_hash(token)
    with db.session() as session:
        found = session.execute(
            select(StaffSession, StaffUser)
            .join(StaffUser, StaffUser.id == StaffSession.user_id)
            .where(StaffSession.id == key)
        ).one_or_none()
        if found is None:
            return None
        row, user = found
        if (
            user.disabled_at is not None
            or now >= row.expires_at
            or now - row.last_seen_at >= timeouts.idle
        ):
            session.delete(row)
            return None
        flash = row.flash if take_flash else None
        if now - row.last_seen_at >= TOUCH_EVERY or flash is not None:
            row.last_seen_at = now
            if flash is not None:
                row.flash = None
        return Current(
            id=row.id,
            user=member(session, user),
            stage=Stage(row.stage),
            csrf_token=row.csrf_token,
            challenge=row.challenge,
            pending_totp_sealed=row.pending_totp_sealed,
            flash=flash,
        )


def advance(db: Database, session_id: str, stage: Stage) -> None:
    _set(db, session_id, stage=stage.value, challenge=None, pending_totp_sealed=None)


def set_flash(db: Database, session_id: str, kind: str, text: str) -> None:
    """The notice the next page shows once ("notice" or "problem")."""
    _set(db, session_id, flash={"kind": kind, "text": text})


def set_challenge(db: Database, session_id: str, challenge: str | None) -> None:
    _set(db, session_id, challenge=challenge)


def set_pending_totp(db: Database, session_id: str, sealed: str | None) -> None:
    _set(db, session_id, pending_totp_sealed=sealed)


def end(db: Database, session_id: str) -> None:
    with db.session() as session:
        session.execute(delete(StaffSession).where(StaffSession.id == session_id))


def purge_expired(db: Database, now: datetime, timeouts: Timeouts) -> int:
    """Delete sessions past either timeout (upkeep; an expired one is refused anyway)."""
    with db.session() as session:
        result = session.execute(
            delete(StaffSession).where(
                (StaffSession.expires_at <= now)
                | (StaffSession.last_seen_at <= now - timeouts.idle)
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _set(db: Database, session_id: str, **values: Any) -> None:
    with db.session() as session:
        session.execute(update(StaffSession).where(StaffSession.id == session_id).values(**values))
