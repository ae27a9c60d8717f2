"""Changing what is scheduled: a new schedule version planned from now (after a new due date,
a birth, a resume, a re-subscription, a dead address), and extending every plan's rolling
horizon as its sends approach (a beat job).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from campaigns import metrics
from campaigns.planner import Planner
from campaigns.rules.planning import PlannedSend
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.storage.bulk import is_postgres as db_is_postgres
from campaigns.storage.db import Database, among
from campaigns.storage.models import Enrollment, Patient
from campaigns.storage.plans import cancel_plan


def reschedule(
    session: Session,
    planner: Planner,
    enrollment: Enrollment,
    patient: Patient,
    now: datetime,
    reason: str,
) -> list[PlannedSend]:
    """A new schedule version planned from now (the caller holds the patient's lock): what is
    pending is cancelled, what was sent stays done, missed steps are skipped. A broadcast's
    row is no step of the plan: it stays as it is (whatever stops her messages stops it)."""
    cancel_plan(session, [enrollment.id], reason, now)
    enrollment.schedule_version += 1
    enrollment.updated_at = now
    session.flush()
    if enrollment.status != EnrollmentStatus.ACTIVE.value:
        return []
    return planner.replan(session, enrollment, patient, now)


@dataclass(frozen=True)
class Extended:
    enrollments: int
    rows: int
    batches: int


def extend_plans(
    db: Database,
    planner: Planner,
    now: datetime,
    *,
    batch_size: int = 500,
    max_seconds: float | None = None,
) -> Extended:
    """Write the sends coming within the horizon for every plan that needs it (beat job), in
    batches until none is left (or `max_seconds` have passed): however many patients there
    are, every active plan keeps its next days written.

    Each batch is one transaction: the patients' locks (those busy with a change or a send
    are passed over, not waited for: the next run takes them), the facts of the whole batch
    in a few queries, the new rows in one bulk write. Batches follow the plans' ends, oldest
    first, so the most urgent are written first.
    """
    threshold = now + planner.horizon / 2
    after: tuple[datetime, int] | None = None
    enrollments = rows = batches = 0
    started = time.monotonic()
    while max_seconds is None or time.monotonic() - started < max_seconds:
        with db.session() as session:
            pairs, after = _lock_batch(session, threshold, after, batch_size)
            if after is None:
                break
            rows += planner.replan_many(session, pairs, now) if pairs else 0
        enrollments, batches = enrollments + len(pairs), batches + 1
        metrics.HORIZON_EXTENDED.inc(len(pairs))
    metrics.HORIZON_ROWS.inc(rows)
    return Extended(enrollments, rows, batches)


def _lock_batch(
    session: Session, threshold: datetime, after: tuple[datetime, int] | None, size: int
) -> tuple[list[tuple[Enrollment, Patient]], tuple[datetime, int] | None]:
    """The next batch of plans ending before `threshold`, their patients locked, as they
    are once locked; and where the next batch starts (None: no more)."""
    due = (
        select(Enrollment.planned_until, Enrollment.id, Enrollment.patient_id)
        .where(
            Enrollment.status == EnrollmentStatus.ACTIVE.value,
            Enrollment.planned_until < threshold,
        )
        .order_by(Enrollment.planned_until, Enrollment.id)
        .limit(size)
    )
    if after is not None:
        due = due.where(tuple_(Enrollment.planned_until, Enrollment.id) > tuple_(*after))
    found = session.execute(due).all()
    if not found:
        return [], None
    patient_ids = list({row.patient_id for row in found})
    locked = set(
        session.execute(
            select(Patient.id)
            .where(among(Patient.id, patient_ids, postgres=db_is_postgres(session)))
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    # Read again now the locks are held: a change that committed meanwhile is seen.
    pairs = session.execute(
        select(Enrollment, Patient)
        .join(Patient, Patient.id == Enrollment.patient_id)
        .where(
            among(
                Enrollment.id,
                [r.id for r in found if r.patient_id in locked],
                postgres=db_is_postgres(session),
            ),
            Enrollment.status == EnrollmentStatus.ACTIVE.value,
            Enrollment.planned_until < threshold,
        )
        .execution_options(populate_existing=True)
    ).all()
    last = found[-1]
    return [(e, p) for e, p in pairs], (last.planned_until, last.id)
