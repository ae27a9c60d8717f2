"""Campaign pages: every campaign at a glance; one campaign's steps on a timeline, as a sample
patient gets them, with its versions; pausing or ending it for everyone; its versions as zip
files out and in; editing it as a draft with live checks; and a clinician's sign-off.

Reading content needs VIEW_CONTENT (it holds no patient data); editing EDIT_CONTENT;
approving APPROVE_CONTENT (clinicians only, and never the draft's author, which
campaigns.content_versions checks again); pausing and ending RUN_CAMPAIGNS. The work is in
campaigns.content_editing, campaigns.content_versions and campaigns.campaign_states.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from markupsafe import escape
from starlette.datastructures import UploadFile

from campaigns import campaign_states, content_editing, content_versions
from campaigns.bootstrap import Services
from campaigns.content_editing import SAMPLE_FIRST_NAME
from campaigns.rules.bundles import Bundle, campaign_of
from campaigns.rules.catalog import DEFAULT_LANGUAGE, CatalogError
from campaigns.rules.content import ContentError, Recipient
from campaigns.rules.drafts import MAX_ZIP_BYTES, bundle_from_zip, zip_of
from campaigns.rules.errors import InputError, StateError
from campaigns.rules.roles import Permission
from campaigns.rules.vocabulary import Channel
from campaigns.storage.models import CampaignVersion
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.messages import EMAIL_FRAME_HEADERS
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])


class ZipDownload(Response):
    """A campaign version as a zip file to save (not a page)."""

    media_type = "application/zip"


def _page(key: str) -> str:
    return f"/staff/campaigns/{key}"


# --- Every campaign -----------------------------------------------------------------------------


@router.get("/campaigns", response_class=HTMLResponse)
@requires(Permission.VIEW_CONTENT)
def campaign_list(request: Request, services: ServicesDep) -> HTMLResponse:
    return _list(request, services)


def _list(
    request: Request, services: Services, errors: dict[str, str] | None = None, status: int = 200
) -> HTMLResponse:
    return render(
        request,
        "campaigns.html",
        rows=content_editing.summaries(services.db),
        errors=errors or {},
        max_kb=MAX_ZIP_BYTES // 1024,
        status_code=status,
    )


@router.post("/campaigns/import", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
async def campaign_import(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    form = await request.form()
    upload = form.get("file")
    data = b""
    if isinstance(upload, UploadFile):
        data = await upload.read(MAX_ZIP_BYTES + 1)
        await upload.close()

    def imported() -> tuple[str, int]:
        if not data:
            raise InputError("file", "choose a campaign's zip file to upload")
        bundle = bundle_from_zip(data)
        draft_id = content_versions.import_draft(
            services.db, bundle, staff.user.actor, services.clock.now()
        )
        return bundle.key, draft_id

    try:
        key, _ = await run_in_threadpool(imported)
    except InputError as exc:
        return await run_in_threadpool(_list, request, services, {"file": exc.message}, 400)
    except (CatalogError, StateError) as exc:
        return await run_in_threadpool(_list, request, services, {"file": str(exc)}, 400)
    return await run_in_threadpool(
        back,
        request,
        f"{_page(key)}/draft",
        notice="Imported as a draft. It goes live only when a clinician approves it.",
    )


# --- One campaign -------------------------------------------------------------------------------


@router.get("/campaigns/{key}", response_class=HTMLResponse)
@requires(Permission.VIEW_CONTENT)
def campaign_page(request: Request, services: ServicesDep, key: str) -> HTMLResponse:
    view = content_editing.campaign_view(services.db, key)
    if view is None:
        raise HTTPException(404, "no such campaign")
    shown = view.summary.live or view.summary.draft
    assert shown is not None  # a campaign is listed for its live version or its draft
    campaign = campaign_of(content_versions.bundle_of(shown), key)
    draft = content_versions.as_version(shown, draft=True) if shown.state != "live" else None
    steps = content_editing.samples(services.renderer, campaign, None if draft else shown.id, draft)
    return render(
        request,
        "campaign.html",
        view=view,
        shown=shown,
        steps=steps,
        campaign=campaign,
        sample=SAMPLE_FIRST_NAME,
    )


@router.get("/campaigns/{key}/email", response_class=HTMLResponse)
@requires(Permission.VIEW_CONTENT)
def campaign_email(
    services: ServicesDep, key: str, step: str = "", version: int | None = None, discreet: str = ""
) -> HTMLResponse:
    """A step's email for the sample patient, for the campaign and draft pages' frames."""
    row, bundle = _version(services, key, version)
    campaign = campaign_of(bundle, key)
    emails = [s.key for s in campaign.steps if Channel.EMAIL in s.channels]
    chosen = step or (emails[0] if emails else "")
    if chosen not in emails:
        raise HTTPException(404, "this step has no email")
    live = row.state in (content_versions.LIVE, content_versions.RETIRED)
    try:
        html = services.renderer.render_email(
            key,
            chosen,
            Recipient(SAMPLE_FIRST_NAME, DEFAULT_LANGUAGE, discreet == "yes"),
            "#",
            version=row.id if live else None,
            draft=None if live else content_versions.as_version(row, draft=True),
        ).html
    except ContentError as exc:
        html = f"<p>This email cannot be shown yet: {escape(str(exc))}</p>"
    return HTMLResponse(html, headers=EMAIL_FRAME_HEADERS)


def _version(services: Services, key: str, version: int | None) -> tuple[CampaignVersion, Bundle]:
    """A version of the campaign by id; without one, the live version (or, for a campaign
    not live yet, its draft)."""
    try:
        return content_versions.export(services.db, key, version)
    except CatalogError:
        found = None if version is not None else content_editing.draft_of(services.db, key)
        if found is None:
            raise HTTPException(404, "no such version") from None
        return found


@router.get("/campaigns/{key}/export")
@requires(Permission.VIEW_CONTENT)
def campaign_export(services: ServicesDep, key: str, version: int | None = None) -> ZipDownload:
    """A version (the live one by default) as a zip of the repository's campaign folder."""
    row, bundle = _version(services, key, version)
    return ZipDownload(
        zip_of(bundle),
        headers={"Content-Disposition": f'attachment; filename="{key}-v{row.number}.zip"'},
    )


# --- Running a campaign for everyone ------------------------------------------------------------

NoteField = Annotated[str, Form(max_length=500)]


def _run(
    request: Request, services: Services, key: str, note: str, act: str, actor: str
) -> Response:
    if content_editing.campaign_view(services.db, key) is None:
        raise HTTPException(404, "no such campaign")
    if not note.strip():
        return back(request, _page(key), problem="Note: say why, for the record (required).")
    now = services.clock.now()
    try:
        if act == "pause":
            done = campaign_states.pause(services.db, key, actor, note, now)
        elif act == "resume":
            done = campaign_states.resume(services.db, services.planner, key, actor, note, now)
        else:
            done = campaign_states.end(services.db, key, actor, note, now)
    except StateError as exc:
        return back(request, _page(key), problem=str(exc))
    said = {"paused": "Paused", "running": "Resumed", "ended": "Ended"}[done.state]
    notice = f"{said} for everyone: {done.changed} patients' programmes changed."
    if done.left:
        notice += f" {done.left} could not be (their state had changed): see the patient list."
    return back(request, _page(key), notice=notice)


@router.post("/campaigns/{key}/pause")
@requires(Permission.RUN_CAMPAIGNS)
def campaign_pause(
    request: Request, services: ServicesDep, staff: StaffDep, key: str, note: NoteField = ""
) -> Response:
    return _run(request, services, key, note, "pause", staff.user.actor)


@router.post("/campaigns/{key}/resume")
@requires(Permission.RUN_CAMPAIGNS)
def campaign_resume(
    request: Request, services: ServicesDep, staff: StaffDep, key: str, note: NoteField = ""
) -> Response:
    return _run(request, services, key, note, "resume", staff.user.actor)


@router.post("/campaigns/{key}/end")
@requires(Permission.RUN_CAMPAIGNS)
def campaign_end(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    key: str,
    note: NoteField = "",
    confirm: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    if confirm != "yes":
        return back(
            request,
            _page(key),
            problem="End: tick the box to confirm that every patient's messages stop for good.",
        )
    return _run(request, services, key, note, "end", staff.user.actor)
