"""The staff alerts inbox: danger signs, losses, births to confirm and replies to read.

Each alert waits until someone acknowledges it; the oldest RED comes first. A birth alert
carries the date the patient gave, and confirming it records the birth, which switches the
plan to the after-birth steps, and then acknowledges the alert. A loss the patient told us of
holds her messages until staff confirm it (every programme ends) or clear the hold (they
resume); campaigns.loss_review does either, with the acknowledgement.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from campaigns import alerts, enrollments, loss_review
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.intake import parse_date
from campaigns.rules.keywords import Intent
from campaigns.rules.roles import Permission
from campaigns.storage.models import Enrollment
from campaigns.storage.patients import active_enrollments
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render
from campaigns.web.staff import _pending, viewed

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])


def _latest_live(session: Session, patient_id: int) -> Enrollment | None:
    """The enrollment a birth is recorded on: the patient's newest live one."""
    live = active_enrollments(session, patient_id, enrollments.LIVE)
    return live[-1] if live else None


@router.get("/alerts", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def inbox(request: Request, services: ServicesDep, show: str = "open") -> HTMLResponse:
    with services.db.session() as session:
        rows = alerts.inbox(session, everything=show == "all")
    return render(request, "alerts.html", rows=rows, show=show, now=services.clock.now())


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def alert_page(
    request: Request, services: ServicesDep, staff: StaffDep, alert_id: int
) -> HTMLResponse:
    with services.db.session() as session:
        found = alerts.alert_record(session, alert_id)
        if found is None:
            raise HTTPException(404, "no such alert")
        patient = found.patient
        live = _latest_live(session, patient.id) if patient is not None else None
        if patient is not None:
            viewed(session, services.clock.now(), staff, patient.id, "alert")
    return render(
        request,
        "alert.html",
        alert=found.alert,
        patient=patient,
        message=found.message,
        live=live,
    )


@router.post("/alerts/{alert_id}/acknowledge")
@requires(Permission.ACT_ON_PATIENTS)
def acknowledge(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    alert_id: int,
    note: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        alerts.acknowledge(
            services.db, alert_id, services.clock.now(), actor=staff.user.actor, note=note
        )
    except NotFoundError:
        raise HTTPException(404, "no such alert") from None
    except StateError as exc:
        return back(request, f"/staff/alerts/{alert_id}", problem=str(exc))
    return back(request, "/staff/alerts", notice=f"Alert {alert_id} acknowledged.")


@router.post("/alerts/{alert_id}/confirm-birth")
@requires(Permission.ACT_ON_PATIENTS)
def confirm_birth(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    alert_id: int,
    birth_date: Annotated[str, Form()] = "",
) -> Response:
    """Staff checked the date with the patient: record the birth, then close the alert."""
    now = services.clock.now()
    page = f"/staff/alerts/{alert_id}"
    with services.db.session() as session:
        found = alerts.alert_record(session, alert_id)
        if found is None or found.patient is None:
            raise HTTPException(404, "no such alert")
        alert = found.alert
        waiting = alert.kind == Intent.BORN.value and alert.acknowledged_at is None
        live = _latest_live(session, found.patient.id)
    if not waiting:
        return back(request, page, problem=f"alert {alert_id} is not a birth to be confirmed")
    if live is None:
        problem = "this patient has no live enrollment to record a birth on"
        return back(request, page, problem=problem)
    try:
        planned = services.enrollments.record_birth(
            live.id, parse_date(birth_date, "birth_date"), actor=staff.user.actor
        )
    except (InputError, StateError, NotFoundError) as exc:
        return back(request, page, problem=str(exc).strip("'\""))
    # Acknowledged meanwhile by someone else: fine, the birth is what mattered.
    with contextlib.suppress(StateError):
        alerts.acknowledge(
            services.db, alert_id, now, actor=staff.user.actor, note="birth confirmed"
        )
    notice = f"Birth recorded; {_pending(planned)} after-birth messages planned."
    return back(request, "/staff/alerts", notice=notice)


@router.post("/alerts/{alert_id}/confirm-loss")
@requires(Permission.ACT_ON_PATIENTS)
def confirm_loss(
    request: Request, services: ServicesDep, staff: StaffDep, alert_id: int
) -> Response:
    """Staff checked with the patient: the loss is real; every programme ends."""
    try:
        cancelled = loss_review.confirm(
            services.db, alert_id, services.clock.now(), actor=staff.user.actor
        )
    except NotFoundError:
        raise HTTPException(404, "no such alert") from None
    except StateError as exc:
        return back(request, f"/staff/alerts/{alert_id}", problem=str(exc))
    notice = f"Loss confirmed; every programme ended ({cancelled} messages cancelled)."
    return back(request, "/staff/alerts", notice=notice)


@router.post("/alerts/{alert_id}/clear-loss-hold")
@requires(Permission.ACT_ON_PATIENTS)
def clear_loss_hold(
    request: Request, services: ServicesDep, staff: StaffDep, alert_id: int
) -> Response:
    """Staff checked with the patient: there was no loss; her messages resume from now."""
    try:
        planned = loss_review.clear(
            services.db, services.planner, alert_id, services.clock.now(), actor=staff.user.actor
        )
    except NotFoundError:
        raise HTTPException(404, "no such alert") from None
    except StateError as exc:
        return back(request, f"/staff/alerts/{alert_id}", problem=str(exc))
    notice = f"Loss hold cleared; {_pending(planned)} messages planned from now."
    return back(request, "/staff/alerts", notice=notice)
