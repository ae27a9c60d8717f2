"""Staff pages: dashboard, patients and their timelines, enrolment, outbox, preview.

Server-rendered HTML (autoescaped Jinja2) and plain forms; each action is one call into the
application layer, and an error names the field that is wrong.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, or_, select

from campaigns import alerts, enrollments, views
from campaigns.consent import ConsentState
from campaigns.content import Recipient
from campaigns.domain import Channel, ConsentSource, EddSource, MessageStatus
from campaigns.errors import InputError, NotFoundError, StateError
from campaigns.intake import parse_date, parse_edd_source, parse_enrolment
from campaigns.pregnancy import gestational_age, trimester_label
from campaigns.scheduling import state_of, suppressed_channels
from campaigns.storage.models import (
    ConsentEvent,
    Enrollment,
    InboundMessage,
    Patient,
    ScheduledMessage,
)
from campaigns.web.deps import ServicesDep
from campaigns.window import zone

router = APIRouter(prefix="/staff", include_in_schema=False)
pages = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
STAFF = "staff"  # until staff sign-in exists, actions are recorded as done by "staff"


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    context.setdefault("notice", request.query_params.get("notice"))
    context.setdefault("problem", request.query_params.get("problem"))
    return pages.TemplateResponse(request, name, context)


def _back(url: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{url}?{urlencode(params)}", status_code=303)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, services: ServicesDep) -> HTMLResponse:
    now = services.clock.now()
    with services.db.session() as session:
        backlog = views.backlog(session, now)
        upcoming = session.execute(
            select(ScheduledMessage, Patient)
            .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(ScheduledMessage.status == MessageStatus.PENDING.value)
            .order_by(ScheduledMessage.next_attempt_at)
            .limit(12)
        ).all()
        active = session.execute(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "active")
        ).scalar_one()
        waiting = alerts.open_counts(session)
    return _page(
        request,
        "dashboard.html",
        backlog=backlog,
        upcoming=upcoming,
        active=active,
        alerts=waiting.by_severity,
        local=_local,
    )


@router.get("/patients", response_class=HTMLResponse)
def patients(request: Request, services: ServicesDep, q: str = "") -> HTMLResponse:
    with services.db.session() as session:
        query = (
            select(Patient, Enrollment)
            .join(Enrollment, Enrollment.patient_id == Patient.id, isouter=True)
            .order_by(Patient.id.desc())
            .limit(200)
        )
        if q.strip():
            like = f"%{q.strip()}%"
            query = query.where(
                or_(
                    Patient.name.ilike(like),
                    Patient.phone.ilike(like),
                    Patient.email.ilike(like),
                    Patient.clinic_ref.ilike(like),
                )
            )
        rows = session.execute(query).all()
    today = services.clock.now().date()
    listed = [(p, e, _stage(e, today)) for p, e in rows]
    return _page(request, "patients.html", rows=listed, q=q)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(request: Request, services: ServicesDep, patient_id: int) -> HTMLResponse:
    now = services.clock.now()
    with services.db.session() as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            raise HTTPException(404, "no such patient")
        records = (
            session.execute(
                select(Enrollment)
                .where(Enrollment.patient_id == patient.id)
                .order_by(Enrollment.id)
            )
            .scalars()
            .all()
        )
        entries = views.timeline(session, patient, services.planner, now)
        suppressed = suppressed_channels(session, patient)
        received = (
            session.execute(
                select(InboundMessage)
                .where(InboundMessage.patient_id == patient.id)
                .order_by(InboundMessage.id.desc())
                .limit(50)
            )
            .scalars()
            .all()
        )
        ledger = (
            session.execute(
                select(ConsentEvent)
                .where(ConsentEvent.patient_id == patient.id)
                .order_by(ConsentEvent.id)
            )
            .scalars()
            .all()
        )
        consent: ConsentState = state_of(ledger)  # the ledger shown below, read once
    local_today = now.astimezone(zone(patient.timezone)).date()
    return _page(
        request,
        "patient.html",
        patient=patient,
        enrollments=records,
        entries=entries,
        consent=consent,
        suppressed=suppressed,
        received=received,
        ledger=ledger,
        channels=list(Channel),
        stage=lambda e: _stage(e, local_today),
        today=local_today.isoformat(),
        edd_sources=[s.value for s in EddSource],
    )


@router.post("/enrollments/{enrollment_id}/{action}")
def enrollment_action(
    services: ServicesDep,
    enrollment_id: int,
    action: str,
    edd: Annotated[str, Form()] = "",
    edd_source: Annotated[str, Form()] = "scan",
    birth_date: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
) -> Response:
    now = services.clock.now()
    with services.db.session() as session:
        patient_id = session.execute(
            select(Enrollment.patient_id).where(Enrollment.id == enrollment_id)
        ).scalar_one_or_none()
    if patient_id is None:
        raise HTTPException(404, "no such enrollment")
    back = f"/staff/patients/{patient_id}"
    try:
        notice = _apply(
            services,
            enrollment_id,
            action,
            now,
            edd=edd,
            edd_source=edd_source,
            birth_date=birth_date,
            confirm=confirm,
        )
    except (InputError, StateError, NotFoundError) as exc:
        return _back(back, problem=str(exc).strip("'\""))
    return _back(back, notice=notice)


def _apply(
    services: Any,
    enrollment_id: int,
    action: str,
    now: datetime,
    *,
    edd: str,
    edd_source: str,
    birth_date: str,
    confirm: str,
) -> str:
    if action == "edd":
        source = parse_edd_source(edd_source)
        planned = enrollments.change_edd(
            services.db,
            services.planner,
            enrollment_id,
            parse_date(edd, "edd"),
            source,
            now,
            actor=STAFF,
        )
        return f"Due date changed; {_pending(planned)} messages in the new plan."
    if action == "birth":
        planned = enrollments.record_birth(
            services.db,
            services.planner,
            enrollment_id,
            parse_date(birth_date, "birth_date"),
            now,
            actor=STAFF,
        )
        return f"Birth recorded; {_pending(planned)} after-birth messages planned."
    if action == "loss":
        if confirm != "yes":
            raise InputError("confirm", "tick the box to confirm the pregnancy has ended")
        cancelled = enrollments.record_loss(services.db, enrollment_id, now, actor=STAFF)
        return f"Loss recorded. {cancelled} messages cancelled; nothing more will be sent."
    if action == "pause":
        cancelled = enrollments.pause(services.db, enrollment_id, now, actor=STAFF)
        return f"Paused; {cancelled} pending messages cancelled."
    if action == "resume":
        planned = enrollments.resume(services.db, services.planner, enrollment_id, now, actor=STAFF)
        return f"Resumed; {_pending(planned)} messages planned from today."
    raise HTTPException(404, "no such action")


@router.get("/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, services: ServicesDep) -> HTMLResponse:
    return _page(
        request,
        "enrol.html",
        values={"tz": services.settings.default_timezone, "channels": ["sms"], "language": "en"},
        error=None,
        sources=[s.value for s in EddSource],
    )


@router.post("/enrol", response_class=HTMLResponse)
async def enrol_submit(request: Request, services: ServicesDep) -> Response:
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

    def enrol() -> enrollments.Enrolled:
        request_ = parse_enrolment(fields, services.intake, now)
        [done] = enrollments.enrol_many(
            services.db, services.planner, [request_], now, source=ConsentSource.FORM, actor=STAFF
        )
        return done

    try:
        done = await run_in_threadpool(enrol)  # database work stays off the event loop
    except InputError as exc:
        return _page(
            request, "enrol.html", values=values, error=exc, sources=[s.value for s in EddSource]
        )
    return _back(
        f"/staff/patients/{done.patient_id}",
        notice=f"Enrolled; {_pending(done.planned)} messages planned.",
    )


@router.get("/outbox", response_class=HTMLResponse)
def outbox(request: Request, services: ServicesDep, q: str = "") -> HTMLResponse:
    with services.db.session() as session:
        rows = views.outbox(session, limit=200, search=q or None)
    return _page(request, "outbox.html", rows=rows, q=q, local=_local)


@router.get("/outbox/{message_id}", response_class=HTMLResponse)
def outbox_message(request: Request, services: ServicesDep, message_id: int) -> HTMLResponse:
    with services.db.session() as session:
        found = session.execute(
            select(ScheduledMessage, Patient, Enrollment)
            .join(Enrollment, Enrollment.id == ScheduledMessage.enrollment_id)
            .join(Patient, Patient.id == Enrollment.patient_id)
            .where(ScheduledMessage.id == message_id)
        ).one_or_none()
    if found is None or found[0].sent_at is None:
        raise HTTPException(404, "no such sent message")
    message, patient, enrollment = found
    html = None
    if message.channel == Channel.EMAIL.value:
        # The outbox keeps the text; the HTML is the same render, shown as the patient saw it.
        html = services.renderer.render_email(
            enrollment.campaign,
            message.step_key,
            Recipient(patient.name.split()[0], patient.language, patient.discreet),
            services.links.unsubscribe_url(patient.id, message.id),
        ).html
    return _page(
        request, "outbox_message.html", message=message, patient=patient, html=html, local=_local
    )


@router.get("/preview", response_class=HTMLResponse)
def preview(
    request: Request,
    services: ServicesDep,
    edd: str = "",
    tz: str = "",
    enrolled: str = "",
    marketing: str = "",
    discreet: str = "",
) -> HTMLResponse:
    entries: list[views.PreviewEntry] = []
    error = None
    timezone = tz or services.settings.default_timezone
    if edd:
        try:
            entries = views.preview_request(
                services.catalog,
                services.window,
                services.renderer,
                campaign="leg-cramps",
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
    return _page(
        request,
        "preview.html",
        entries=entries,
        error=error,
        values={
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
    return f"{age} ({trimester_label(age)})"


def _pending(planned: list[Any]) -> int:
    return sum(1 for p in planned if p.status == MessageStatus.PENDING)


def _local(instant: datetime | None, timezone: str) -> str:
    if instant is None:
        return ""
    return instant.astimezone(zone(timezone)).strftime("%a %d %b %Y %H:%M %Z")
