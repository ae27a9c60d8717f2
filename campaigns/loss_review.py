"""Staff decide a loss the patient told us of in a text: confirm it, or clear the hold.

A text puts the patient's messages on a loss hold and raises an AMBER `loss` alert; nothing is
ended by the text. From the alert, staff confirm the loss (every programme ends, as when staff
record a loss) or clear the hold (the programme resumes, planned again from now, nothing
repeated). Each is one transaction under the patient's lock, which also acknowledges the alert,
so the decision and its alert can never disagree; both are audited.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns import alerts, enrollments
from campaigns.planner import Planner
from campaigns.rules.errors import NotFoundError, StateError
from campaigns.rules.keywords import Intent
from campaigns.rules.planning import PlannedSend
from campaigns.storage.db import Database
from campaigns.storage.models import Alert, Patient
from campaigns.storage.patients import lock_patient


def confirm(db: Database, alert_id: int, now: datetime, *, actor: str) -> int:
    """The loss is real: end every programme of the patient; returns how many sends stopped."""
    with db.session() as session:
        alert, patient = _open_loss_alert(session, alert_id)
        cancelled = enrollments.confirm_loss(session, patient, now, actor=actor)
        alerts.mark_acknowledged(session, alert, now, actor=actor, note="loss confirmed")
        return cancelled


def clear(
    db: Database, planner: Planner, alert_id: int, now: datetime, *, actor: str
) -> list[PlannedSend]:
    """There was no loss: resume what the hold stopped; returns the new plan."""
    with db.session() as session:
        alert, patient = _open_loss_alert(session, alert_id)
        planned = enrollments.clear_loss_hold(session, planner, patient, now, actor=actor)
        alerts.mark_acknowledged(session, alert, now, actor=actor, note="loss hold cleared")
        return planned


def _open_loss_alert(session: Session, alert_id: int) -> tuple[Alert, Patient]:
    """The alert, still open and about a patient's loss, with the patient's lock taken first
    (the order every change that can stop a send follows)."""
    found = session.get(Alert, alert_id)
    if found is None:
        raise NotFoundError(f"no alert {alert_id}")
    if found.patient_id is None or found.kind != Intent.LOSS.value:
        raise StateError(f"alert {alert_id} is not a patient's loss waiting for a decision")
    patient = lock_patient(session, found.patient_id)
    alert = session.execute(
        select(Alert)
        .where(Alert.id == alert_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if alert.acknowledged_at is not None:  # decided already: nothing more to do
        raise StateError(f"alert {alert_id} was already acknowledged by {alert.acknowledged_by}")
    return alert, patient
