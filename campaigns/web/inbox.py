"""The conversation inbox: every text, grouped by patient or unknown number, newest first;
a conversation with her texts and ours in time order; a reply box (one SMS, counted as it is
typed by static/reply_count.js, checked again here); handled, linked, wrong number.

Reading needs the patient permission (operators never see it); acting needs a clinician's;
sending a reply outside the send window needs SEND_OUTSIDE_WINDOW. campaigns.inbox does the
work; every action is audited as the signed-in member, and so is opening a conversation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from campaigns import inbox, queries
from campaigns.bootstrap import Services
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.roles import Permission, may
from campaigns.rules.window import zone
from campaigns.staff_sessions import Current
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render
from campaigns.web.staff import viewed

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])
#: How the reply box's words are limited (the server checks them again).
MAX_FORM_CHARS = 1000


@router.get("/inbox", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def inbox_page(
    request: Request, services: ServicesDep, show: str = "all", before: int | None = None
) -> HTMLResponse:
    unread_only = show == "unread"
    with services.db.session() as session:
        listing = inbox.conversations(session, unread_only=unread_only, before=before)
        waiting = inbox.open_count(session)
    return render(
        request,
        "inbox.html",
        rows=listing.rows,
        older=listing.older,
        show="unread" if unread_only else "all",
        waiting=waiting,
        when=_when,
    )


@router.get("/inbox/{conversation_id}", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def conversation_page(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    conversation_id: int,
    q: str = "",
) -> HTMLResponse:
    return _conversation(request, services, staff, conversation_id, q=q)


def _conversation(
    request: Request,
    services: Services,
    staff: Current,
    conversation_id: int,
    *,
    q: str = "",
    status_code: int = 200,
    **form: Any,
) -> HTMLResponse:
    now = services.clock.now()
    with services.db.session() as session:
        try:
            view = inbox.conversation(session, conversation_id)
        except NotFoundError:
            raise HTTPException(404, "no such conversation") from None
        status = None
        if view.patient is not None:
            status = inbox.reply_status(session, view.patient, services.window, now)
            viewed(session, now, staff, view.patient.id, "conversation")
        found = queries.patients(session, q, limit=20) if q.strip() and view.patient is None else []
    tz = view.patient.timezone if view.patient is not None else "Europe/London"
    form.setdefault("words", "")
    form.setdefault("reply_error", None)
    if form["reply_error"] and (view.patient is None or (status and status.problem)):
        # No reply box to show it beside: said at the top of the page.
        form["problem"] = form["reply_error"]
    return render(
        request,
        "conversation.html",
        status_code=status_code,
        view=view,
        status=status,
        q=q,
        found=found,
        form_key=inbox.new_form_key(),
        prefix=f"{services.renderer.clinic.short_name}: ",
        may_override=may(staff.role, Permission.SEND_OUTSIDE_WINDOW),
        when=lambda at: _when(at, tz),
        **form,
    )


@router.post("/inbox/{conversation_id}/reply")
@requires(Permission.ACT_ON_PATIENTS)
def reply(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    conversation_id: int,
    words: Annotated[str, Form(alias="reply", max_length=MAX_FORM_CHARS)] = "",
    form_key: Annotated[str, Form(max_length=64)] = "",
    outside_window: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    page = f"/staff/inbox/{conversation_id}"
    override = outside_window == "yes"
    if override and not may(staff.role, Permission.SEND_OUTSIDE_WINDOW):
        return _conversation(
            request,
            services,
            staff,
            conversation_id,
            status_code=403,
            words=words,
            reply_error="Only a clinician may send a reply outside the send window.",
        )
    try:
        sent = inbox.reply(
            services.db,
            services.window,
            services.renderer.clinic.short_name,
            conversation_id,
            words,
            services.clock.now(),
            actor=staff.user.actor,
            form_key=form_key,
            outside_window=override,
        )
    except NotFoundError:
        raise HTTPException(404, "no such conversation") from None
    except (InputError, StateError) as exc:
        message = exc.message if isinstance(exc, InputError) else str(exc)
        return _conversation(
            request,
            services,
            staff,
            conversation_id,
            status_code=400,
            words=words,
            reply_error=message[:1].upper() + message[1:],
        )
    if sent.again:
        notice = "That reply was already sent once; it was not sent again."
    elif sent.window_opens is not None:
        notice = (
            "Reply written. The send window is shut, so it goes when it opens: "
            f"{_when(sent.window_opens, sent.timezone)}."
        )
    elif override:
        notice = "Reply written: it goes now, outside the send window, as you asked."
    else:
        notice = "Reply written: it goes out within a minute."
    return back(request, page, notice=notice)


@router.post("/inbox/{conversation_id}/handled")
@requires(Permission.ACT_ON_PATIENTS)
def handled(
    request: Request, services: ServicesDep, staff: StaffDep, conversation_id: int
) -> Response:
    try:
        inbox.mark_handled(
            services.db, conversation_id, services.clock.now(), actor=staff.user.actor
        )
    except NotFoundError:
        raise HTTPException(404, "no such conversation") from None
    return back(request, "/staff/inbox", notice="Conversation marked handled.")


@router.post("/inbox/{conversation_id}/wrong-number")
@requires(Permission.ACT_ON_PATIENTS)
def wrong_number(
    request: Request, services: ServicesDep, staff: StaffDep, conversation_id: int
) -> Response:
    try:
        inbox.mark_wrong_number(
            services.db, conversation_id, services.clock.now(), actor=staff.user.actor
        )
    except NotFoundError:
        raise HTTPException(404, "no such conversation") from None
    except StateError as exc:
        return back(request, f"/staff/inbox/{conversation_id}", problem=str(exc))
    return back(request, "/staff/inbox", notice="Marked as a wrong number, and handled.")


@router.post("/inbox/{conversation_id}/link")
@requires(Permission.ACT_ON_PATIENTS)
def link(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    conversation_id: int,
    patient_id: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    page = f"/staff/inbox/{conversation_id}"
    if not patient_id.strip().isdigit():
        return back(request, page, problem="Patient: choose the patient these texts are from.")
    try:
        hers = inbox.link_to_patient(
            services.db,
            conversation_id,
            int(patient_id),
            services.clock.now(),
            actor=staff.user.actor,
        )
    except NotFoundError:
        raise HTTPException(404, "no such conversation") from None
    except InputError as exc:
        return back(request, page, problem=f"{exc.field}: {exc.message}")
    except StateError as exc:
        return back(request, page, problem=str(exc))
    notice = "Texts linked to the patient. Her mobile number on record is unchanged."
    return back(request, f"/staff/inbox/{hers}", notice=notice)


def _when(at: datetime | None, timezone: str = "Europe/London") -> str:
    """A time as staff read it: in her time zone (the clinic's for an unknown number)."""
    if at is None:
        return ""
    return at.astimezone(zone(timezone)).strftime("%a %d %b %Y %H:%M %Z")
