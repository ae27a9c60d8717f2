"""Writing the audit trail: who did what, when. Details carry ids and reasons, never PHI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from campaigns.storage.models import AuditEvent

_INSERT = insert(AuditEvent)


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
    # A Core INSERT in the caller's transaction: an audit row is written, never read back
    # here, so it needs none of the ORM's unit-of-work bookkeeping (a third of a reply's cost).
    session.connection().execute(
        _INSERT,
        {
            "occurred_at": now,
            "actor": actor,
            "action": action,
            "patient_id": patient_id,
            "enrollment_id": enrollment_id,
            "message_id": message_id,
            "detail": detail,
        },
    )
