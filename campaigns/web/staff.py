"""Staff pages: dashboard, patients and their timelines, enrolment, preview (the message log,
which the old outbox page became, is campaigns.web.messages).

Server-rendered HTML (autoescaped Jinja2) and plain forms; each action is one call into the
application layer, and an error names the field that is wrong. Every route declares the
permission it needs (campaigns.web.guard); every action is audited as the signed-in member,
and so is opening a patient's record.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from campaigns import alerts, audit, content_editing, enrollments, queries
from campaigns.bootstrap import Services
from campaigns.enrollments import Enrollments
from campaigns.rules.errors import InputError, NotFoundError, StateError, by_field
from campaigns.rules.intake import parse_date, parse_edd_source, parse_enrollment
from campaigns.rules.pregnancy import gestational_age, trimester_label
from campaigns.rules.roles import Permission, may
from campaigns.rules.vocabulary import (
    LIVE_ENROLLMENT,
    Channel,
    ConsentSource,
    EddSource,
    MessageStatus,
)
from campaigns.rules.window import zone
from campaigns.rules.wording import label, moment
from campaigns.staff_sessions import Current
from campaigns.storage.models import (
    Enrollment,
)
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])
#: The words staff read out when they take a consent (the enrol form's), to start from.
STANDARD_WORDING = {
    "programme": "I agree Santi can use my due date and pregnancy to send me leg-health tips.",
    "marketing_sms": "I agree Santi can send me offers and booking reminders by text.",
    "marketing_email": "I agree Santi can send me offers and booking reminders by email.",
}


def viewed(session: Session, now: datetime, staff: Current, patient_id: int, page: str) -> None:
    """Who opened whose record, and when (NHS data-security practice)."""
    audit.record(session, now, staff.user.actor, "patient_viewed", patient_id=patient_id, page=page)


@router.get("/", response_class=HTMLResponse)
@requires(Permission.SIGNED_IN)
def dashboard(request: Request, services: ServicesDep, staff: StaffDep) -> HTMLResponse:
    # Operators see counts, never patients.
    with_patients = may(staff.role, Permission.VIEW_PATIENTS)
    with services.db.session() as session:
        found = queries.dashboard(session, services.clock.now(), with_patients=with_patients)
        waiting = alerts.open_counts(session)
    return render(
        request,
        "dashboard.html",
        backlog=found.backlog,
        upcoming=found.upcoming,
        active=found.active,
        alerts=waiting.by_severity,
        local=_local,
    )


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def patient_page(
    request: Request, services: ServicesDep, staff: StaffDep, patient_id: int
) -> HTMLResponse:
    now = services.clock.now()
    with services.db.session() as session:
        found = queries.patient_record(session, patient_id, services.planner, now)
        if found is None:
            raise HTTPException(404, "no such patient")
        viewed(session, now, staff, patient_id, "patient")
    local_today = now.astimezone(zone(found.patient.timezone)).date()
    return render(
        request,
        "patient.html",
        patient=found.patient,
        enrollments=found.enrollments,
        entries=found.current,
        superseded=found.superseded,
        texts=queries.future_texts(found, services.renderer, services.catalog),
        broadcasts=found.broadcasts,
        open_alerts=found.open_alerts,
        acknowledged=found.acknowledged,
        live_campaigns={e.campaign for e in found.enrollments if e.status in LIVE_ENROLLMENT},
        campaigns=sorted(services.catalog),
        wording=STANDARD_WORDING,
        consent=found.consent,
        suppressed=found.suppressed,
        received=found.received,
        ledger=found.ledger,
        channels=list(Channel),
        stage=lambda e: _stage(e, local_today),
        today=local_today.isoformat(),
        edd_sources=[s.value for s in EddSource],
    )


@router.post("/enrollments/{enrollment_id}/{action}")
@requires(Permission.ACT_ON_PATIENTS)
def enrollment_action(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    enrollment_id: int,
    action: str,
    edd: Annotated[str, Form()] = "",
    edd_source: Annotated[str, Form()] = "scan",
    birth_date: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    with services.db.session() as session:
        patient_id = queries.patient_of_enrollment(session, enrollment_id)
    if patient_id is None:
        raise HTTPException(404, "no such enrollment")
    page = f"/staff/patients/{patient_id}"
    try:
        notice = _apply(
            services.enrollments,
            enrollment_id,
            action,
            edd=edd,
            edd_source=edd_source,
            birth_date=birth_date,
            confirm=confirm,
            actor=staff.user.actor,
        )
    except InputError as exc:
        return back(request, page, problem=f"{label(exc.field)}: {exc.plain}")
    except (StateError, NotFoundError) as exc:
        return back(request, page, problem=str(exc).strip("'\""))
    return back(request, page, notice=notice)


def _apply(
    lifecycle: Enrollments,
    enrollment_id: int,
    action: str,
    *,
    edd: str,
    edd_source: str,
    birth_date: str,
    confirm: str,
    actor: str,
) -> str:
    if action == "edd":
        source = parse_edd_source(edd_source)
        planned = lifecycle.change_edd(enrollment_id, parse_date(edd, "edd"), source, actor=actor)
        return f"Due date changed; {_pending(planned)} messages in the new plan."
    if action == "birth":
        born = parse_date(birth_date, "birth_date")
        planned = lifecycle.record_birth(enrollment_id, born, actor=actor)
        return f"Birth recorded; {_pending(planned)} after-birth messages planned."
    if action == "loss":
        if confirm != "yes":
            raise InputError("confirm", "tick the box to confirm the pregnancy has ended")
        cancelled = lifecycle.record_loss(enrollment_id, actor=actor)
        return f"Loss recorded. {cancelled} messages cancelled; nothing more will be sent."
    if action == "pause":
        cancelled = lifecycle.pause(enrollment_id, actor=actor)
        return f"Paused; {cancelled} pending messages cancelled."
    if action == "resume":
        planned = lifecycle.resume(enrollment_id, actor=actor)
        return f"Resumed; {_pending(planned)} messages planned from today."
    raise HTTPException(404, "no such action")


@router.get("/enrol", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
def enroll_form(request: Request, services: ServicesDep) -> HTMLResponse:
    campaigns = _choices(services)
    first = next((c.key for c in campaigns if not c.closed), "")
    return render(
        request,
        "enrol.html",
        values={
            "tz": services.settings.default_timezone,
            "channels": ["sms"],
            "language": "en",
            "campaign": first,
        },
        errors={},
        sources=[s.value for s in EddSource],
        campaigns=campaigns,
    )


def _choices(services: Services) -> list[content_editing.Choice]:
    return content_editing.choices(services.catalog, services.intake.closed)


@router.post("/enrol", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
async def enroll_submit(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["channels"] = [str(c) for c in form.getlist("channels")]
    values["consent"] = [str(c) for c in form.getlist("consent")]
    fields: dict[str, str | None] = {
        **{k: v for k, v in values.items() if isinstance(v, str)},
        "channels": ",".join(values["channels"]),
        "consent": ",".join(values["consent"]),
    }
    now = services.clock.now()

    def enroll() -> enrollments.Enrolled:
        request_ = parse_enrollment(fields, services.intake, now)
        [done] = services.enrollments.enroll(
            [request_], source=ConsentSource.FORM, actor=staff.user.actor
        )
        return done

    try:
        done = await run_in_threadpool(enroll)  # database work stays off the event loop
    except InputError as exc:
        return render(
            request,
            "enrol.html",
            values=values,
            errors=by_field(exc),
            sources=[s.value for s in EddSource],
            campaigns=await run_in_threadpool(_choices, services),
            status_code=400,
        )
    return await run_in_threadpool(
        back,
        request,
        f"/staff/patients/{done.patient_id}",
        notice=f"Enrolled; {_pending(done.planned)} messages planned.",
    )


@router.get("/preview", response_class=HTMLResponse)
@requires(Permission.SIGNED_IN)
def preview(
    request: Request,
    services: ServicesDep,
    edd: str = "",
    tz: str = "",
    enrolled: str = "",
    marketing: str = "",
    discreet: str = "",
    campaign: str = "",
) -> HTMLResponse:
    entries: list[queries.PreviewEntry] = []
    error = None
    timezone = tz or services.settings.default_timezone
    campaign = campaign or services.catalog.default
    if edd:
        try:
            entries = queries.preview_request(
                services.catalog,
                services.window,
                services.renderer,
                campaign=campaign,
                edd=edd,
                timezone=timezone,
                enrolled=enrolled,
                birth="",
                marketing=bool(marketing),
                discreet=bool(discreet),
                now=services.clock.now(),
            )
        except InputError as exc:
            error = exc
    return render(
        request,
        "preview.html",
        entries=entries,
        error=error,
        campaigns=sorted(services.catalog),
        values={
            "campaign": campaign,
            "edd": edd,
            "tz": timezone,
            "enrolled": enrolled,
            "marketing": marketing,
            "discreet": discreet,
        },
    )


def _stage(enrollment: Enrollment | None, today: date) -> str:
    if enrollment is None:
        return ""
    if enrollment.birth_date is not None:
        return f"{(today - enrollment.birth_date).days} days after birth"
    age = gestational_age(enrollment.edd, today)
    return f"{age.words()} ({trimester_label(age)})"


def _pending(planned: list[Any]) -> int:
    return sum(1 for p in planned if p.status == MessageStatus.PENDING)


def _local(instant: datetime | None, timezone: str) -> str:
    """In the patient's time zone, written as on every page (campaigns.rules.wording)."""
    return moment(instant, timezone, clinic=None) + (
        f" {instant.astimezone(zone(timezone)):%Z}" if instant is not None else ""
    )
