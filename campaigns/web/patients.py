"""Staff pages for a patient's record: the patient list, editing her details, consent heard
by phone or in person, and enrolling her again once a programme has ended.

Each action is one call into the application layer (campaigns.patient_edits,
campaigns.enrollments); an error names the field in staff words and changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from campaigns import content_editing, patient_edits, patient_list
from campaigns.bootstrap import Services
from campaigns.patient_edits import PatientEdits
from campaigns.rules import wording
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.pregnancy import gestational_age, trimester_label
from campaigns.rules.roles import Permission
from campaigns.rules.vocabulary import EddSource, EnrollmentStatus, MessageStatus
from campaigns.rules.window import zone
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])

#: This page's own words where they differ from the shared ones (campaigns.rules.wording):
#: the consent form's fields, and the list's filters.
LABELS = {
    "purpose": "Consent for",
    "channel": "Channel",
    "change": "Given or withdrawn",
    "source": "How she told you",
    "wording": "Words read or shown to her",
    "campaign": "Campaign",
    "consent": "What she agreed to",
    "status": "Status",
    "trimester": "Stage",
}


def label(field: str) -> str:
    return LABELS.get(field) or wording.label(field)


def _edits(services: Services) -> PatientEdits:
    return PatientEdits(services.db, services.planner, services.clock)


def _clinic_today(services: Services) -> Any:
    return services.clock.now().astimezone(zone(services.settings.default_timezone)).date()


@router.get("/patients", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def patients(
    request: Request,
    services: ServicesDep,
    q: str = "",
    status: str = "",
    campaign: str = "",
    trimester: str = "",
    alert: str = "",
    before: int | None = None,
) -> HTMLResponse:
    filters = patient_list.ListFilters(status, campaign, trimester, bool(alert), q)
    campaigns = sorted(services.catalog)
    today = _clinic_today(services)
    error = None
    page = patient_list.ListPage([], None)
    try:
        patient_list.check_filters(filters, campaigns)
        with services.db.session() as session:
            page = patient_list.patient_page(session, filters, today, before=before)
    except InputError as exc:
        error = exc
    query = {
        k: v
        for k, v in (
            ("q", q),
            ("status", status),
            ("campaign", campaign),
            ("trimester", trimester),
            ("alert", alert),
        )
        if v
    }
    return render(
        request,
        "patients.html",
        page=page,
        filters=filters,
        query=query,
        first_page=before is None,
        statuses=[s.value for s in EnrollmentStatus],
        campaigns=campaigns,
        trimesters=patient_list.TRIMESTERS,
        error=error,
        label=label,
        stage=lambda row: _stage(row.edd, row.birth_date, today),
        status_code=400 if error else 200,
    )


def _stage(edd: Any, birth_date: Any, today: Any) -> str:
    if birth_date is not None:
        return f"{(today - birth_date).days} days after birth"
    age = gestational_age(edd, today)
    return f"{age.weeks} weeks {age.day_of_week} days ({trimester_label(age)})"


@router.get("/patients/{patient_id}/edit", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
def edit_form(request: Request, services: ServicesDep, patient_id: int) -> HTMLResponse:
    with services.db.session() as session:
        values = patient_edits.editable(session, patient_id)
    if values is None:
        raise HTTPException(404, "no such patient")
    return _edit_page(request, patient_id, values, None)


def _edit_page(
    request: Request,
    patient_id: int,
    values: dict[str, Any],
    error: InputError | StateError | None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "patient_edit.html",
        patient_id=patient_id,
        values=values,
        error=error,
        label=label,
        status_code=status_code,
    )


def _fields(form: FormData) -> dict[str, str]:
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["channels"] = ",".join(str(c) for c in form.getlist("channels"))
    return values


@router.post("/patients/{patient_id}/edit", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
async def edit_submit(
    request: Request, services: ServicesDep, staff: StaffDep, patient_id: int
) -> Response:
    values = _fields(await request.form())

    def save() -> patient_edits.Edited:
        details = patient_edits.parse_details(values, services.settings.phone_region)
        return _edits(services).edit(patient_id, details, actor=staff.user.actor)

    try:
        edited = await run_in_threadpool(save)
    except NotFoundError:
        raise HTTPException(404, "no such patient") from None
    except (InputError, StateError) as exc:
        return _edit_page(request, patient_id, values, exc, status_code=400)
    if not edited.changed:
        notice = "Nothing changed."
    else:
        names = ", ".join(label(f).lower() for f in edited.changed)
        notice = f"Saved: {names}."
        if edited.cancelled or edited.planned:
            notice += f" Messages planned again from now: {edited.planned} to go."
    return await run_in_threadpool(back, request, f"/staff/patients/{patient_id}", notice=notice)


@router.post("/patients/{patient_id}/consent")
@requires(Permission.ACT_ON_PATIENTS)
async def consent_submit(
    request: Request, services: ServicesDep, staff: StaffDep, patient_id: int
) -> Response:
    values = {k: str(v) for k, v in (await request.form()).items() if isinstance(v, str)}
    page = f"/staff/patients/{patient_id}"

    def record() -> patient_edits.ConsentRecorded:
        change = patient_edits.parse_consent(values)
        return _edits(services).consent(patient_id, change, actor=staff.user.actor)

    try:
        done = await run_in_threadpool(record)
    except NotFoundError:
        raise HTTPException(404, "no such patient") from None
    except InputError as exc:
        problem = f"Consent not recorded. {label(exc.field)}: {exc.message}"
        return await run_in_threadpool(back, request, page, problem=problem)
    except StateError as exc:
        return await run_in_threadpool(back, request, page, problem=str(exc))
    if values.get("change") == "withdrawn":
        notice = f"Withdrawal recorded; {done.cancelled} messages stopped."
    else:
        notice = f"Consent recorded; {done.planned} messages planned from now."
    return await run_in_threadpool(back, request, page, notice=notice)


@router.get("/patients/{patient_id}/enrol", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
def reenrol_form(request: Request, services: ServicesDep, patient_id: int) -> HTMLResponse:
    with services.db.session() as session:
        values = patient_edits.editable(session, patient_id)
    if values is None:
        raise HTTPException(404, "no such patient")
    form = {"channels": values["channels"].split(",") if values["channels"] else ["sms"]}
    return _reenrol_page(request, services, patient_id, values["name"], form, None)


def _name_of(services: Services, patient_id: int) -> str:
    with services.db.session() as session:
        known = patient_edits.editable(session, patient_id)
    return known["name"] if known else ""


def _reenrol_page(
    request: Request,
    services: Services,
    patient_id: int,
    name: str,
    values: dict[str, Any],
    error: InputError | StateError | None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "patient_reenrol.html",
        patient_id=patient_id,
        patient_name=name,
        values=values,
        error=error,
        label=label,
        sources=[s.value for s in EddSource],
        campaigns=content_editing.choices(services.catalog, services.intake.closed),
        status_code=status_code,
    )


@router.post("/patients/{patient_id}/enrol", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
async def reenrol_submit(
    request: Request, services: ServicesDep, staff: StaffDep, patient_id: int
) -> Response:
    form = await request.form()
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["channels"] = [str(c) for c in form.getlist("channels")]
    values["consent"] = [str(c) for c in form.getlist("consent")]
    fields: dict[str, str | None] = {
        "campaign": values.get("campaign") or "",
        "edd": values.get("edd") or "",
        "edd_source": values.get("edd_source") or "",
        "channels": ",".join(values["channels"]),
        "consent": ",".join(values["consent"]),
    }

    def enrol() -> Any:
        return services.enrollments.reenroll(
            patient_id, fields, services.intake, actor=staff.user.actor
        )

    try:
        done = await run_in_threadpool(enrol)
    except NotFoundError:
        raise HTTPException(404, "no such patient") from None
    except (InputError, StateError) as exc:
        name = await run_in_threadpool(_name_of, services, patient_id)
        return await run_in_threadpool(
            _reenrol_page, request, services, patient_id, name, values, exc, status_code=400
        )
    planned = sum(1 for p in done.planned if p.status is MessageStatus.PENDING)
    return await run_in_threadpool(
        back,
        request,
        f"/staff/patients/{patient_id}",
        notice=f"Enrolled again; {planned} messages planned.",
    )
