"""Writing the audit trail: who did what, when. Details carry ids and reasons, never PHI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from campaigns.storage.models import AuditEvent

_INSERT = insert(AuditEvent)
_PENDING = "campaigns.audit"


def record(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    *,
    patient_id: int | None = None,
    enrollment_id: int | None = None,
    message_id: int | None = None,
    **detail: Any,
) -> None:
    """Add an audit event to the caller's transaction; it is written just before the commit,
    together with the transaction's other events in one statement (never if it rolls back)."""
    session.info.setdefault(_PENDING, []).append(
        {
            "occurred_at": now,
            "actor": actor,
            "action": action,
            "patient_id": patient_id,
            "enrollment_id": enrollment_id,
            "message_id": message_id,
            "detail": detail,
        }
    )


@event.listens_for(Session, "before_commit")
def _write(session: Session) -> None:
    # A Core executemany: audit rows are written, never read back in the transaction, so they
    # need none of the ORM's bookkeeping, and a reply's two or three events cost one round trip.
    pending = session.info.pop(_PENDING, None)
    if pending:
        session.connection().execute(_INSERT, pending)


@event.listens_for(Session, "after_rollback")
def _discard(session: Session) -> None:
    session.info.pop(_PENDING, None)
