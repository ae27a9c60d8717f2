"""The message log: every outbox row, newest first, filtered and paged by keyset; each message's
page (its text, tries, errors and delivery events); and fixing what did not go (retry, mark sent
or not sent, cancel) for selected rows. Thin: reads through campaigns.message_log, actions
through campaigns.message_actions.

Operators may see and fix the log but no patient data: no patient column, no patient filter,
no text of a message (docs/decisions.md, "Message log at 10 million rows").
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from campaigns import audit, broadcasts, message_actions, message_log
from campaigns.rules.content import ContentError, Recipient
from campaigns.rules.errors import InputError
from campaigns.rules.roles import Permission, may
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.rules.window import zone
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])

#: The statuses offered in the filter, most wanted first.
STATUSES = [
    MessageStatus.FAILED,
    MessageStatus.UNKNOWN,
    MessageStatus.BOUNCED,
    MessageStatus.UNDELIVERED,
    MessageStatus.PENDING,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.CANCELLED,
    MessageStatus.SKIPPED,
    MessageStatus.EXPIRED,
    MessageStatus.CLAIMED,
    MessageStatus.SENDING,
]


@router.get("/messages", response_class=HTMLResponse)
@requires(Permission.VIEW_MESSAGES)
def message_list(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    status: Annotated[list[str] | None, Query()] = None,
    channel: str = "",
    provider: str = "",
    campaign: str = "",
    step: str = "",
    since: str = "",
    until: str = "",
    patient: str = "",
    broadcast: str = "",
    before: Annotated[str, Query()] = "",
) -> HTMLResponse:
    with_patients = may(staff.role, Permission.VIEW_PATIENTS)
    error: InputError | None = None
    found = message_log.Page([], None)
    filters = message_log.Filters()
    values = {
        "channel": channel,
        "provider": provider,
        "campaign": campaign,
        "step": step,
        "since": since,
        "until": until,
        "patient": patient,
        "broadcast": broadcast,
    }
    try:
        filters = message_log.parse_filters(statuses=status or [], **values)
        cursor = _cursor(before)
        with services.db.session() as session:
            found = message_log.page(session, filters, before=cursor, with_patients=with_patients)
    except InputError as exc:
        error = exc
    with services.db.session() as session:
        broadcast_choices = broadcasts.choices(session)
    args = filters.query_args()
    return render(
        request,
        "messages.html",
        status_code=400 if error else 200,
        page=found,
        filters=filters,
        error=error,
        values={"status": status or [], **values},
        broadcasts=broadcast_choices,
        statuses=STATUSES,
        campaigns=sorted(services.catalog),
        with_patients=with_patients,
        here=_url(args),
        next_url=_url([*args, ("before", str(found.next_before))]) if found.next_before else None,
        first_url=_url(args) if before else None,
        actions=list(message_actions.Action),
        words=message_actions.STATUS_WORDS,
        local=_local,
    )


def _cursor(before: str) -> int | None:
    if not before.strip():
        return None
    if not before.strip().isdigit():
        raise InputError("Page", "this page link is not valid: go back to the first page")
    return int(before.strip())


def _url(args: list[tuple[str, str]]) -> str:
    return "/staff/messages" + ("?" + urlencode(args) if args else "")


@router.get("/messages/{message_id}", response_class=HTMLResponse)
@requires(Permission.VIEW_MESSAGES)
def message_page(
    request: Request, services: ServicesDep, staff: StaffDep, message_id: int
) -> HTMLResponse:
    with_patients = may(staff.role, Permission.VIEW_PATIENTS)
    with services.db.session() as session:
        found = message_log.message(session, message_id, with_patients=with_patients)
        if found is None:
            raise HTTPException(404, "no such message")
        if found.patient is not None:
            audit.record(
                session,
                services.clock.now(),
                staff.user.actor,
                "patient_viewed",
                patient_id=found.patient.id,
                message_id=message_id,
                page="message",
            )
    preview: str | None = None
    row = found.message
    if found.broadcast is not None and row.channel == Channel.SMS.value:
        preview = found.broadcast.sms  # the same words for every patient
    elif found.patient is not None and row.body is None and row.channel == Channel.SMS.value:
        try:  # not sent yet: the text it will have, rendered as the send path will
            preview = services.renderer.render_sms(
                found.campaign,
                row.step_key,
                Recipient(
                    found.patient.name.split()[0], found.patient.language, found.patient.discreet
                ),
                row.content_version,
            ).body
        except (ContentError, LookupError):
            preview = None
    return render(
        request,
        "message.html",
        found=found,
        row=row,
        preview=preview,
        email=row.channel == Channel.EMAIL.value,
        words=message_actions.STATUS_WORDS,
        takes={
            a.value: {s.value for s in message_actions.TAKES[a]} for a in message_actions.Action
        },
        local=_local,
    )


#: An email shown inside the staff page: its own styles, nothing else; framed only by us.
EMAIL_FRAME_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "frame-ancestors 'self'; sandbox"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
}


@router.get("/messages/{message_id}/email", response_class=HTMLResponse)
@requires(Permission.VIEW_PATIENTS)
def message_email(request: Request, services: ServicesDep, message_id: int) -> HTMLResponse:
    """The email as the patient saw it (or will see it), for the message page's frame."""
    with services.db.session() as session:
        found = message_log.message(session, message_id, with_patients=True)
    if found is None or found.patient is None or found.message.channel != Channel.EMAIL.value:
        raise HTTPException(404, "no such email")
    patient = found.patient
    recipient = Recipient(patient.name.split()[0], patient.language, patient.discreet)
    unsubscribe = services.links.unsubscribe_url(patient.id, found.message.id)
    said = found.broadcast
    try:
        if said is not None and said.subject is not None:
            html = services.renderer.render_broadcast_email(
                said.subject, said.paragraphs, recipient, unsubscribe
            ).html
        else:
            html = services.renderer.render_email(
                found.campaign,
                found.message.step_key,
                recipient,
                unsubscribe,
                found.message.content_version,
            ).html
    except (ContentError, LookupError):
        raise HTTPException(404, "this email's template is gone") from None
    return HTMLResponse(html, headers=EMAIL_FRAME_HEADERS)


@router.post("/messages/actions")
@requires(Permission.FIX_MESSAGES)
def message_actions_post(
    request: Request,
    services: ServicesDep,
    staff: StaffDep,
    action: Annotated[str, Form()] = "",
    ids: Annotated[list[str] | None, Form()] = None,
    note: Annotated[str, Form()] = "",
    back_to: Annotated[str, Form()] = "",
) -> Response:
    page = _back_to(back_to)
    try:
        chosen = message_actions.parse_action(action)
        wanted = message_actions.parse_ids(ids or [])
        done = message_actions.apply(
            services.db, chosen, wanted, services.clock.now(), actor=staff.user.actor, note=note
        )
    except InputError as exc:
        return back(request, page, problem=f"{exc.field}: {exc.message}. Nothing was changed.")
    if done.refused and not done.done:
        return back(request, page, problem=done.summary())
    return back(request, page, notice=done.summary())


def _back_to(target: str) -> str:
    """Back to the log (with its filters) or a message's page: only our own pages."""
    if target.startswith("/staff/messages") and "//" not in target and "\\" not in target:
        return target
    return "/staff/messages"


# -- the old Outbox page: the log's local provider view ----------------------------------------


@router.get("/outbox")
@requires(Permission.VIEW_MESSAGES)
def outbox(q: str = "") -> RedirectResponse:
    args = [("provider", "local")] + ([("patient", q)] if q.strip() else [])
    return RedirectResponse(_url(args), status_code=307)


@router.get("/outbox/{message_id}")
@requires(Permission.VIEW_MESSAGES)
def outbox_message(message_id: int) -> RedirectResponse:
    return RedirectResponse(f"/staff/messages/{message_id}", status_code=307)


@router.get("/outbox/{message_id}/email")
@requires(Permission.VIEW_PATIENTS)
def outbox_email(message_id: int) -> RedirectResponse:
    return RedirectResponse(f"/staff/messages/{message_id}/email", status_code=307)


def _local(instant: object, timezone: str) -> str:
    from datetime import datetime

    if not isinstance(instant, datetime):
        return ""
    return instant.astimezone(zone(timezone)).strftime("%a %d %b %Y %H:%M %Z")
