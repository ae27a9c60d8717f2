"""The staff patient list: each patient once, with her newest programme, newest first,
filtered by status, campaign, trimester and open alerts, a keyset page at a time.

Paging is by the newest enrollment's id (`before`: the last id of the page shown), never
OFFSET, so a deep page costs what the first does. Which index serves what:

- no filter, campaign, trimester: the enrollments' primary key, read backwards from `before`
  (a campaign or a trimester is a large share of the rows, so a page is found in a few
  hundred);
- status: ix_enrollments_status_id (status, id), read backwards from `before` (a rare status,
  such as stopped or loss hold, would otherwise be looked for across the whole table);
- open alert: the few open alerts through ix_alerts_open (acknowledged_at IS NULL), then
  their patients' enrollments through ix_enrollments_patient_id;
- "newest enrollment of the patient" (each patient once): a probe of ix_enrollments_patient_id
  per row (a patient has one or two).

Figures at 100,000 patients are in docs/performance.md ("Patient list at 100,000").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from campaigns.rules.errors import InputError
from campaigns.rules.pregnancy import TERM_DAYS
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.storage.models import Alert, Enrollment, Patient

PAGE_SIZE = 50
#: Trimester filter values (NHS boundaries: 13+0 and 28+0 weeks) and the after-birth stage.
TRIMESTERS = {"1": "First trimester", "2": "Second trimester", "3": "Third trimester"}
AFTER_BIRTH = "after_birth"
_SECOND, _THIRD = 13 * 7, 28 * 7  # gestational days at which the trimesters start


@dataclass(frozen=True)
class ListFilters:
    status: str = ""
    campaign: str = ""
    trimester: str = ""  # "1", "2", "3", "after_birth" or ""
    alert: bool = False  # only patients with an open alert
    q: str = ""  # name, number, email or clinic reference


@dataclass(frozen=True)
class ListRow:
    patient_id: int
    name: str
    enrollment_id: int
    campaign: str
    status: str
    edd: date
    birth_date: date | None
    open_alerts: int


@dataclass(frozen=True)
class ListPage:
    rows: list[ListRow]
    next_before: int | None  # the `before` of the next page; None: this is the last


def check_filters(filters: ListFilters, campaigns: list[str]) -> None:
    """InputError naming a filter whose value is not one the form offers."""
    if filters.status and filters.status not in {s.value for s in EnrollmentStatus}:
        raise InputError("status", "Choose a status from the list")
    if filters.campaign and filters.campaign not in campaigns:
        raise InputError("campaign", "Choose a campaign from the list")
    if filters.trimester and filters.trimester not in {*TRIMESTERS, AFTER_BIRTH}:
        raise InputError("trimester", "Choose a stage from the list")


def patient_page(
    session: Session,
    filters: ListFilters,
    today: date,
    *,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> ListPage:
    """One page of the list; `today` is the clinic's local date (for the trimester)."""
    found = session.execute(list_query(filters, today, before=before, limit=limit + 1)).all()
    more = len(found) > limit
    found = found[:limit]
    alerts = _open_alerts(session, [row[0] for row in found])
    rows = [
        ListRow(
            patient_id=row[0],
            name=row[1],
            enrollment_id=row[2],
            campaign=row[3],
            status=row[4],
            edd=row[5],
            birth_date=row[6],
            open_alerts=alerts.get(row[0], 0),
        )
        for row in found
    ]
    return ListPage(rows, rows[-1].enrollment_id if more and rows else None)


def list_query(
    filters: ListFilters, today: date, *, before: int | None, limit: int | None
) -> Select[*tuple[Any, ...]]:
    """The page's statement (the benchmark explains it): newest enrollment first."""
    newer = aliased(Enrollment)
    query: Select[*tuple[Any, ...]] = (
        select(
            Enrollment.patient_id,
            Patient.name,
            Enrollment.id,
            Enrollment.campaign,
            Enrollment.status,
            Enrollment.edd,
            Enrollment.birth_date,
        )
        .join(Patient, Patient.id == Enrollment.patient_id)
        .where(~exists().where(newer.patient_id == Enrollment.patient_id, newer.id > Enrollment.id))
        .order_by(Enrollment.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    if before is not None:
        query = query.where(Enrollment.id < before)
    if filters.status:
        query = query.where(Enrollment.status == filters.status)
    if filters.campaign:
        query = query.where(Enrollment.campaign == filters.campaign)
    if filters.trimester == AFTER_BIRTH:
        query = query.where(Enrollment.birth_date.is_not(None))
    elif filters.trimester:
        # Gestational days today = TERM_DAYS - (edd - today): a trimester is a due-date range.
        first, last = {"1": (0, _SECOND), "2": (_SECOND, _THIRD), "3": (_THIRD, 10_000)}[
            filters.trimester
        ]
        query = query.where(
            Enrollment.birth_date.is_(None),
            Enrollment.edd <= today + timedelta(days=TERM_DAYS - first),
            Enrollment.edd > today + timedelta(days=TERM_DAYS - last),
        )
    if filters.alert:
        query = query.where(
            Enrollment.patient_id.in_(
                select(Alert.patient_id).where(
                    Alert.acknowledged_at.is_(None), Alert.patient_id.is_not(None)
                )
            )
        )
    if filters.q.strip():
        like = f"%{filters.q.strip()}%"
        query = query.where(
            or_(
                Patient.name.ilike(like),
                Patient.phone.ilike(like),
                Patient.email.ilike(like),
                Patient.clinic_ref.ilike(like),
            )
        )
    return query


def _open_alerts(session: Session, patient_ids: list[int]) -> dict[int, int]:
    if not patient_ids:
        return {}
    counts = session.execute(
        select(Alert.patient_id, func.count())
        .where(Alert.acknowledged_at.is_(None), Alert.patient_id.in_(patient_ids))
        .group_by(Alert.patient_id)
    ).all()
    return {int(pid): int(count) for pid, count in counts if pid is not None}
