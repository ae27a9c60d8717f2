"""Editing a campaign as a draft, and its clinical sign-off.

A draft is started from the live version; each step is edited on its own page (timing, kind,
channels, catch-up, the text, the email subject and the email body in Markdown), with the
words checked as staff type (static/campaign_edit.js posts the form to `draft/check`, which
answers the problems by field and the text's count) and again when they save. A draft with
wording problems can be saved (they are shown) but not approved. Sign-off shows what the
draft changes, its content hash, and who may approve: a clinician who is not its author.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from campaigns import content_editing, content_versions
from campaigns.bootstrap import Services
from campaigns.content_editing import FIELD_WORDS
from campaigns.content_versions import ApprovalError
from campaigns.rules.bundles import Bundle, campaign_of
from campaigns.rules.catalog import CatalogError
from campaigns.rules.drafts import (
    StepForm,
    differences,
    read_form,
    step_form,
    with_step,
    without_step,
)
from campaigns.rules.errors import InputError, InputErrors, StateError, by_field
from campaigns.rules.roles import Permission, Role
from campaigns.rules.vocabulary import Anchor, Channel, StepKind
from campaigns.staff_sessions import Current
from campaigns.storage.models import CampaignVersion
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])
HashField = Annotated[str, Form(max_length=64)]
#: What each choice of the step form says.
ANCHORS = {
    Anchor.EDD.value: "Weeks of pregnancy (from the due date)",
    Anchor.BIRTH.value: "After the birth",
    Anchor.ENROLMENT.value: "After enrolment",
}
KINDS = {
    StepKind.EDUCATION.value: "Education",
    StepKind.SAFETY.value: "Safety (warning signs: keeps its safety lines)",
    StepKind.SERVICE.value: "Service (welcome, programme end)",
    StepKind.MARKETING.value: "Marketing (only with marketing consent; never sent late)",
}


async def _step_form(request: Request) -> StepForm:
    form = await request.form()
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    return read_form(values, [c for c in form.getlist("channels") if isinstance(c, str)])


StepFormDep = Annotated[StepForm, Depends(_step_form)]


def _draft_page(key: str) -> str:
    return f"/staff/campaigns/{key}/draft"


def _found(services: Services, key: str) -> tuple[CampaignVersion, Bundle] | None:
    return content_editing.draft_of(services.db, key)


def _name(bundle: Bundle) -> str:
    return str(bundle.definition.get("name") or bundle.key)


# --- The draft ----------------------------------------------------------------------------------


@router.get("/campaigns/{key}/draft", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
def draft_page(request: Request, services: ServicesDep, key: str) -> HTMLResponse:
    found = _found(services, key)
    if found is None:
        if content_editing.live_of(services.db, key) is None:
            raise HTTPException(404, "no such campaign")
        return render(request, "campaign_draft.html", key=key, draft=None)
    row, bundle = found
    check = content_editing.draft_problems(services.renderer, bundle)
    try:
        steps = content_editing.ordered(campaign_of(bundle, key).steps)
    except CatalogError:
        steps = []
    return render(
        request,
        "campaign_draft.html",
        key=key,
        draft=row,
        campaign_name=_name(bundle),
        steps=steps,
        check=check,
        problems=check.messages(),
        timing=content_editing.timing_of,
    )


@router.post("/campaigns/{key}/draft")
@requires(Permission.EDIT_CONTENT)
def draft_start(request: Request, services: ServicesDep, staff: StaffDep, key: str) -> Response:
    try:
        content_versions.open_draft(services.db, key, staff.user.actor, services.clock.now())
    except StateError as exc:
        return back(request, f"/staff/campaigns/{key}", problem=str(exc))
    return back(request, _draft_page(key))


@router.post("/campaigns/{key}/draft/discard")
@requires(Permission.EDIT_CONTENT)
def draft_discard(request: Request, services: ServicesDep, staff: StaffDep, key: str) -> Response:
    found = _found(services, key)
    if found is None:
        return back(request, f"/staff/campaigns/{key}", problem="There is no draft to discard.")
    content_versions.discard_draft(services.db, found[0].id, staff.user.actor, services.clock.now())
    return back(request, f"/staff/campaigns/{key}", notice="The draft was discarded.")


# --- One step -----------------------------------------------------------------------------------


@router.get("/campaigns/{key}/draft/steps/{step}", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
def step_page(request: Request, services: ServicesDep, key: str, step: str) -> Response:
    found = _found(services, key)
    if found is None:
        return back(request, _draft_page(key))
    row, bundle = found
    form = step_form(bundle, step)
    if form is None:
        raise HTTPException(404, "no such step in this draft")
    return _step(request, services, row, bundle, form, step)


@router.get("/campaigns/{key}/draft/new-step", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
def new_step_page(request: Request, services: ServicesDep, key: str) -> Response:
    found = _found(services, key)
    if found is None:
        return back(request, _draft_page(key))
    row, bundle = found
    return _step(request, services, row, bundle, StepForm(), None)


def _step(
    request: Request,
    services: Services,
    row: CampaignVersion,
    bundle: Bundle,
    form: StepForm,
    step: str | None,
    *,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    seen_hash: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    words = content_editing.check_words(
        services.renderer.clinic, content_editing.form_words(form, step or form.key or "new")
    )
    return render(
        request,
        "campaign_step.html",
        status_code=status,
        key=row.campaign,
        campaign_name=_name(bundle),
        draft=row,
        step=step,
        form=form,
        errors=errors or {},
        labels=FIELD_WORDS,
        words=words,
        anchors=ANCHORS,
        kinds=KINDS,
        channels=[c.value for c in Channel],
        seen_hash=seen_hash or row.content_hash,
        short_name=services.renderer.clinic.short_name,
        **({"problem": problem} if problem else {}),
    )


@router.post("/campaigns/{key}/draft/steps/{step}", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
def step_save(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    key: str,
    step: str,
    form: StepFormDep,
    seen_hash: HashField = "",
) -> Response:
    return _save(request, services, staff, key, form, step, seen_hash)


@router.post("/campaigns/{key}/draft/new-step", response_class=HTMLResponse)
@requires(Permission.EDIT_CONTENT)
def new_step_save(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    key: str,
    form: StepFormDep,
    seen_hash: HashField = "",
) -> Response:
    return _save(request, services, staff, key, form, None, seen_hash)


def _save(
    request: Request,
    services: Services,
    staff: Current,
    key: str,
    form: StepForm,
    step: str | None,
    seen_hash: str,
) -> Response:
    """Save one step into the draft: refused (nothing saved) when its definition is wrong or
    someone saved the draft meanwhile; saved with its wording problems shown otherwise."""
    found = _found(services, key)
    if found is None:
        return back(request, f"/staff/campaigns/{key}", problem="This draft is no longer open.")
    row, bundle = found
    errors: dict[str, str] = {}
    problem = None
    try:
        changed = with_step(bundle, form, step)
        content_versions.save_draft(
            services.db, row.id, changed, staff.user.actor, services.clock.now(), seen_hash or None
        )
    except InputError as exc:
        errors = by_field(exc)
    except (StateError, CatalogError) as exc:
        problem = str(exc)
    if errors or problem:
        return _step(
            request,
            services,
            row,
            bundle,
            form,
            step,
            errors=errors,
            problem=problem,
            seen_hash=seen_hash,
            status=400 if errors else 409,
        )
    saved = step or form.key
    words = content_editing.check_words(
        services.renderer.clinic, content_editing.form_words(form, saved)
    )
    count = sum(len(p) for p in words.problems.values())
    problems = f"{count} wording problem{'s' * (count != 1)}"
    notice = (
        f"Saved. {problems} to fix before sign-off: see each field."
        if count
        else "Saved. The checks found no problem in this step."
    )
    return back(request, f"{_draft_page(key)}/steps/{saved}", notice=notice)


@router.post("/campaigns/{key}/draft/steps/{step}/remove")
@requires(Permission.EDIT_CONTENT)
def step_remove(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    key: str,
    step: str,
    seen_hash: HashField = "",
) -> Response:
    found = _found(services, key)
    if found is None:
        return back(request, f"/staff/campaigns/{key}", problem="This draft is no longer open.")
    row, bundle = found
    try:
        content_versions.save_draft(
            services.db,
            row.id,
            without_step(bundle, step),
            staff.user.actor,
            services.clock.now(),
            seen_hash or None,
        )
    except InputError as exc:
        return back(request, _draft_page(key), problem=exc.message[:1].upper() + exc.message[1:])
    except (StateError, CatalogError) as exc:
        return back(request, _draft_page(key), problem=str(exc))
    return back(request, _draft_page(key), notice=f"Step “{step}” removed from the draft.")


@router.post("/campaigns/{key}/draft/check")
@requires(Permission.EDIT_CONTENT)
def draft_check(
    services: ServicesDep,
    key: str,
    form: StepFormDep,
    step: Annotated[str, Form(max_length=64)] = "",
) -> JSONResponse:
    """The live checks of a step form as it is typed: problems by field, and the text's count
    in both wordings. Nothing is saved."""
    found = _found(services, key)
    if found is None:
        return JSONResponse({"error": "This draft is no longer open."}, status_code=404)
    problems: dict[str, list[str]] = {}
    try:
        with_step(found[1], form, step or None)
    except InputErrors as exc:
        for problem in exc.problems:
            problems.setdefault(problem.field, []).append(problem.message)
    words = content_editing.check_words(
        services.renderer.clinic, content_editing.form_words(form, step or form.key or "new")
    )
    for field, messages in words.problems.items():
        problems.setdefault(field, []).extend(messages)
    return JSONResponse(
        {"problems": problems, "sms": [count.as_json() for count in words.sms]},
        headers={"Cache-Control": "no-store"},
    )


# --- Sign-off -----------------------------------------------------------------------------------


@router.get("/campaigns/{key}/draft/approve", response_class=HTMLResponse)
@requires(Permission.VIEW_CONTENT)
def approve_page(request: Request, services: ServicesDep, staff: StaffDep, key: str) -> Response:
    found = _found(services, key)
    if found is None:
        if content_editing.live_of(services.db, key) is None:
            raise HTTPException(404, "no such campaign")
        return back(request, f"/staff/campaigns/{key}", notice="There is no draft to approve.")
    row, bundle = found
    live = content_editing.live_of(services.db, key)
    check = content_editing.draft_problems(services.renderer, bundle)
    problems = check.messages()
    return render(
        request,
        "campaign_approve.html",
        check=check,
        emails=_email_steps(bundle),
        key=key,
        campaign_name=_name(bundle),
        draft=row,
        live=live[0] if live else None,
        changes=differences(live[1] if live else None, bundle),
        problems=problems,
        refusals=_refusals(staff, row, problems),
    )


def _email_steps(bundle: Bundle) -> set[str]:
    try:
        campaign = campaign_of(bundle, bundle.key)
    except CatalogError:
        return set()
    return {step.key for step in campaign.steps if Channel.EMAIL in step.channels}


def _refusals(staff: Current, row: CampaignVersion, problems: list[str]) -> list[str]:
    """Why this member cannot approve this draft (none: they can)."""
    found = []
    if staff.role is not Role.CLINICIAN:
        found.append("Only a clinician can approve campaign content; your role is not one.")
    if staff.user.actor in content_versions.authors(row):
        found.append("You wrote or changed this draft, so a different clinician must approve it.")
    if problems:
        found.append("The checks found problems: fix them in the draft first.")
    return found


@router.post("/campaigns/{key}/draft/approve")
@requires(Permission.APPROVE_CONTENT)
def approve(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    key: str,
    seen_hash: HashField = "",
    note: Annotated[str, Form(max_length=1000)] = "",
    apply_to_pending: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    try:
        done = content_editing.approve_draft(
            services.db,
            services.renderer,
            services.catalog,
            key,
            approver=staff.user.actor,
            role=staff.role,
            seen_hash=seen_hash,
            note=note,
            apply_to_pending=apply_to_pending == "yes",
            now=services.clock.now(),
        )
    except (ApprovalError, StateError) as exc:
        return back(request, f"{_draft_page(key)}/approve", problem=_sentence(str(exc)))
    notice = f"Approved: version {done.number} is live for new messages."
    if apply_to_pending == "yes":
        notice += (
            f" {done.repointed} messages already planned now use it; {done.cancelled} of steps "
            "it no longer has were cancelled."
        )
    else:
        notice += " Messages already planned keep the version they were planned with."
    return back(request, f"/staff/campaigns/{key}", notice=notice)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
