"""Broadcasts: the list (what each became: sent, waiting, not sent), the form to write one,
its page (who would get it, the text and the email as patients see them, when it goes), and
schedule, approve and cancel. Thin: campaigns.broadcasts does the work and the auditing.

Reading needs the patient permission (a broadcast shows no patient, but it is about them);
writing, scheduling, approving and cancelling need SEND_BROADCASTS (clinicians and admins).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from campaigns import broadcasts
from campaigns.bootstrap import Services
from campaigns.rules import broadcasts as rules
from campaigns.rules.broadcasts import Cohort, Purpose, Status
from campaigns.rules.content import Recipient, sms_encoding
from campaigns.rules.errors import InputError, NotFoundError, StateError, by_field
from campaigns.rules.roles import Permission, may
from campaigns.rules.window import local_to_utc, zone
from campaigns.storage.broadcasts import text_of
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.messages import EMAIL_FRAME_HEADERS
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])

#: The form's fields in staff words, in the form's order (the error summary links to them).
LABELS = {
    "name": "Name (for staff; never sent)",
    "purpose": "What it is",
    "campaign": "Programme",
    "status": "Their messages are",
    "stage": "Stage",
    "weeks_from": "From week",
    "weeks_to": "To week",
    "days_from": "From day",
    "days_to": "To day",
    "language": "Language",
    "channels": "Send by",
    "sms": "The text message",
    "subject": "Email subject",
    "body": "The email",
    "send_on": "Send on",
    "send_time": "At",
}
#: The first name the email preview greets (a patient's own is never shown here).
EXAMPLE_NAME = "Amara"


def _sending(services: Services) -> broadcasts.Sending:
    settings = services.settings
    return broadcasts.Sending(
        services.window, settings.default_timezone, settings.broadcast_approval_over
    )


@router.get("/broadcasts", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def broadcast_list(
    request: Request, services: ServicesDep, before: int | None = None
) -> HTMLResponse:
    with services.db.session() as session:
        found = broadcasts.listing(session, before=before)
    older = found[-1].broadcast.id if len(found) == broadcasts.PAGE else None
    return render(request, "broadcasts.html", rows=found, older=older, first=before is None)


@router.get("/broadcasts/new", response_class=HTMLResponse)
@requires(Permission.SEND_BROADCASTS)
def broadcast_form(request: Request, services: ServicesDep) -> HTMLResponse:
    values = {"purpose": "service", "status": ["active"], "channels": ["sms"], "stage": "any"}
    return _form(request, services, values, {})


def _form(
    request: Request,
    services: Services,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "broadcast_new.html",
        status_code=status_code,
        values=values,
        errors=errors,
        labels=LABELS,
        campaigns=sorted(services.catalog),
        statuses=[s.value for s in rules.COHORT_STATUSES],
        prefix=f"{services.renderer.clinic.short_name}: ",
        opt_out=rules.OPT_OUT,
        approval_over=services.settings.broadcast_approval_over,
    )


@router.post("/broadcasts", response_class=HTMLResponse)
@requires(Permission.SEND_BROADCASTS)
async def broadcast_create(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    for many in ("status", "channels"):
        values[many] = [str(v) for v in form.getlist(many)]
    try:
        draft = rules.read_form(
            values,
            campaigns=sorted(services.catalog),
            clinic_short_name=services.renderer.clinic.short_name,
        )
    except InputError as exc:
        return _form(request, services, values, by_field(exc), status_code=400)
    now = services.clock.now()
    made = await run_in_threadpool(
        broadcasts.create, services.db, draft, now, actor=staff.user.actor
    )
    notice = "Broadcast written. Check who gets it and what they read, then choose when it goes."
    return await run_in_threadpool(back, request, f"/staff/broadcasts/{made}", notice=notice)


@router.get("/broadcasts/{broadcast_id}", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def broadcast_page(
    request: Request, services: ServicesDep, staff: StaffDep, broadcast_id: int
) -> HTMLResponse:
    return _page(request, services, staff.user.actor, staff.role, broadcast_id)


def _page(
    request: Request,
    services: Services,
    actor: str,
    role: str,
    broadcast_id: int,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    now = services.clock.now()
    with services.db.session() as session:
        try:
            found = broadcasts.one(session, broadcast_id)
        except NotFoundError:
            raise HTTPException(404, "no such broadcast") from None
        row = found.broadcast
        waiting = row.status in (Status.DRAFT.value, Status.AWAITING_APPROVAL.value)
        audience = None
        if waiting:  # who would get it now (a scheduled one's rows tell what happened)
            audience = broadcasts.audience_of(
                session.connection(), row, _sending(services), row.send_at or now
            )
    text = text_of(row)
    clinic = zone(services.settings.default_timezone)
    return render(
        request,
        "broadcast.html",
        status_code=status_code,
        found=found,
        row=row,
        text=text,
        cohort=Cohort.from_json(row.cohort).describe(),
        purpose=Purpose(row.purpose),
        audience=audience,
        left_out_words=rules.LEFT_OUT_WORDS,
        sms=sms_encoding(text.sms) if text.sms else None,
        may_send=may(role, Permission.SEND_BROADCASTS),
        own=actor in (row.created_by, row.requested_by),
        approval_over=services.settings.broadcast_approval_over,
        errors=errors or {},
        values=values or {"when": "now"},
        labels=LABELS,
        today=now.astimezone(clinic).date().isoformat(),
    )


@router.get("/broadcasts/{broadcast_id}/email", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def broadcast_email(request: Request, services: ServicesDep, broadcast_id: int) -> HTMLResponse:
    """The email as patients will see it (with an example first name), for the page's frame."""
    with services.db.session() as session:
        try:
            row = broadcasts.one(session, broadcast_id).broadcast
        except NotFoundError:
            raise HTTPException(404, "no such broadcast") from None
    text = text_of(row)
    if text.subject is None:
        raise HTTPException(404, "this broadcast has no email")
    language = Cohort.from_json(row.cohort).language or "en"
    html = services.renderer.render_broadcast_email(
        text.subject,
        text.paragraphs,
        Recipient(EXAMPLE_NAME, language),
        f"{services.settings.public_url}/u/example",
    ).html
    return HTMLResponse(html, headers=EMAIL_FRAME_HEADERS)


@router.post("/broadcasts/{broadcast_id}/schedule", response_class=HTMLResponse)
@requires(Permission.SEND_BROADCASTS)
def broadcast_schedule(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    broadcast_id: int,
    when: Annotated[str, Form(max_length=8)] = "",
    send_on: Annotated[str, Form(max_length=20)] = "",
    send_time: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    over = services.settings.broadcast_approval_over

    def scheduled() -> str:
        send_at = _send_at(when, send_on, send_time, services.settings.default_timezone)
        done = broadcasts.schedule(
            services.db,
            _sending(services),
            broadcast_id,
            send_at,
            services.clock.now(),
            actor=staff.user.actor,
        )
        if done.status is Status.AWAITING_APPROVAL:
            return (
                f"It would go to {done.recipients} patients, more than {over}: another member "
                "must approve it before it goes."
            )
        return f"Scheduled: {done.messages} messages to {done.recipients} patients."

    try:
        return _act(request, broadcast_id, scheduled)
    except InputError as exc:
        values = {"when": when, "send_on": send_on, "send_time": send_time}
        errors = {exc.field: exc.plain}
        return _page(
            request,
            services,
            staff.user.actor,
            staff.role,
            broadcast_id,
            errors=errors,
            values=values,
            status_code=400,
        )


def _act(request: Request, broadcast_id: int, act: Callable[[], str]) -> Response:
    """Do it and go back to the broadcast's page with what was done, or why it was not."""
    page = f"/staff/broadcasts/{broadcast_id}"
    try:
        notice = act()
    except NotFoundError:
        raise HTTPException(404, "no such broadcast") from None
    except StateError as exc:
        return back(request, page, problem=str(exc))
    return back(request, page, notice=notice)


def _send_at(when: str, send_on: str, send_time: str, timezone: str) -> datetime | None:
    """None for now; else the clinic's local date and time as an instant."""
    if when == "now":
        return None
    if when != "later":
        raise InputError("when", "choose now or a later time")
    try:
        day = date.fromisoformat(send_on.strip())
    except ValueError:
        raise InputError("send_on", "enter a date like 2027-03-01") from None
    try:
        at = time.fromisoformat(send_time.strip())
    except ValueError:
        raise InputError("send_time", "enter a time like 09:30") from None
    return local_to_utc(day, at.hour * 60 + at.minute, zone(timezone))


@router.post("/broadcasts/{broadcast_id}/approve")
@requires(Permission.SEND_BROADCASTS)
def broadcast_approve(
    request: Request, services: ServicesDep, staff: StaffDep, broadcast_id: int
) -> Response:
    def approved() -> str:
        done = broadcasts.approve(
            services.db,
            _sending(services),
            broadcast_id,
            services.clock.now(),
            actor=staff.user.actor,
        )
        return f"Approved and scheduled: {done.messages} messages to {done.recipients} patients."

    return _act(request, broadcast_id, approved)


@router.post("/broadcasts/{broadcast_id}/cancel")
@requires(Permission.SEND_BROADCASTS)
def broadcast_cancel(
    request: Request, services: ServicesDep, staff: StaffDep, broadcast_id: int
) -> Response:
    def cancelled() -> str:
        done = broadcasts.cancel(
            services.db, broadcast_id, services.clock.now(), actor=staff.user.actor
        )
        notice = "Broadcast cancelled."
        if done.count:
            notice += f" {done.count} messages not yet sent will not go."
        if done.in_flight:
            notice += f" {len(done.in_flight)} were already being sent and may still arrive."
        return notice

    return _act(request, broadcast_id, cancelled)
