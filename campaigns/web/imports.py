"""Importing patients from a CSV file on the staff pages: upload, preview (every bad row by
line and field, the patients already enrolled, what will be imported), confirm, progress.

Each step runs in a background thread (campaigns.importing) so a 100,000-row file does not
hold a request open; the page polls /staff/import/{id}/progress (a small script; without it, a
Refresh link). Enrolling from a file needs the same permission as the enrol form.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from campaigns import importing
from campaigns.bootstrap import Services
from campaigns.rules.csv_file import HEADER
from campaigns.rules.roles import Permission
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])
#: The largest file accepted (a 100,000-row file is about 12 MB).
MAX_BYTES = 32 * 1024 * 1024
#: Bad rows listed on the page; the CLI's --dry-run lists every one of a larger file.
SHOWN_PROBLEMS = 1000


def _in_background(name: str, work: Callable[..., None], *args: Any) -> None:
    threading.Thread(target=work, args=args, name=name, daemon=True).start()


@router.get("/import", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
def import_form(request: Request) -> HTMLResponse:
    return render(request, "import.html", header=",".join(HEADER), error=None)


@router.post("/import", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
async def import_upload(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    form = await request.form()
    upload = form.get("file")
    data = b""
    if isinstance(upload, UploadFile):
        data = await upload.read()
        await upload.close()
    if not data.strip():
        return render(
            request,
            "import.html",
            header=",".join(HEADER),
            error="File: choose a CSV file of patients to upload.",
            status_code=400,
        )
    name = (upload.filename if isinstance(upload, UploadFile) else None) or "patients.csv"
    import_id = await run_in_threadpool(
        importing.upload, services.db, data, name, services.clock.now(), actor=staff.user.actor
    )
    _in_background(
        f"import-check-{import_id}",
        importing.run_check,
        services.db,
        services.intake,
        services.clock,
        import_id,
    )
    return await run_in_threadpool(back, request, f"/staff/import/{import_id}")


def _found(services: Services, import_id: int) -> importing.ImportView:
    found = importing.view(services.db, import_id, services.clock.now())
    if found is None:
        raise HTTPException(404, "no such import")
    return found


@router.get("/import/{import_id}", response_class=HTMLResponse)
@requires(Permission.ACT_ON_PATIENTS)
def import_page(request: Request, services: ServicesDep, import_id: int) -> HTMLResponse:
    found = _found(services, import_id)
    problems = found.report.get("problems", [])
    return render(
        request,
        "import_status.html",
        job=found,
        problems=problems[:SHOWN_PROBLEMS],
        more_problems=max(0, len(problems) - SHOWN_PROBLEMS),
        already=found.report.get("already", []),
        ready=found.report.get("ready", []),
        file_problems=found.report.get("file", []),
    )


@router.get("/import/{import_id}/progress")
@requires(Permission.ACT_ON_PATIENTS)
def import_progress(services: ServicesDep, import_id: int) -> JSONResponse:
    found = _found(services, import_id)
    return JSONResponse(
        {
            "status": found.status,
            "working": found.working,
            "rows": found.rows,
            "checked": found.checked,
            "ready": found.ready,
            "written": found.written,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/import/{import_id}/confirm")
@requires(Permission.ACT_ON_PATIENTS)
def import_confirm(
    request: Request, services: ServicesDep, staff: StaffDep, import_id: int
) -> Response:
    page = f"/staff/import/{import_id}"
    _found(services, import_id)
    if not importing.confirm(services.db, import_id, services.clock.now()):
        return back(request, page, problem="This file is not waiting to be imported.")
    _in_background(
        f"import-{import_id}",
        importing.run_import,
        services.db,
        services.planner,
        services.intake,
        services.clock,
        import_id,
        staff.user.actor,
    )
    return back(request, page)


@router.post("/import/{import_id}/discard")
@requires(Permission.ACT_ON_PATIENTS)
def import_discard(
    request: Request, services: ServicesDep, staff: StaffDep, import_id: int
) -> Response:
    _found(services, import_id)
    if not importing.discard(services.db, import_id, services.clock.now(), actor=staff.user.actor):
        return back(
            request, f"/staff/import/{import_id}", problem="This file can no longer be dropped."
        )
    return back(request, "/staff/import", notice="The file was dropped; nothing was imported.")
