"""The operator's page: every beat and worker queue seen (last heartbeat), each periodic job's
last run, the backlog and lag, provider error rates over the last hour, halted channels
(resume), and failed or unconfirmed sends (lists by message id; requeue). Counts, ids and
process names only: no patient's name, number or message is on it.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from campaigns import delivery, halts, heartbeats, queries, readiness
from campaigns.bootstrap import Services
from campaigns.rules.errors import StateError
from campaigns.rules.roles import Permission
from campaigns.rules.vocabulary import Channel, MessageStatus
from campaigns.staff_sessions import Current
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import back, render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])


@router.get("/ops", response_class=HTMLResponse)
@requires(Permission.OPERATE)
def operations(request: Request, services: ServicesDep) -> Response:
    now = services.clock.now()
    with services.db.session() as session:
        backlog = queries.backlog(session, now)
        seen = heartbeats.every(session, now - PROCESSES_SEEN_WITHIN)
        jobs = queries.job_runs(session)
        outcomes = queries.provider_outcomes(session, now - ERROR_RATE_OVER)
    ready = readiness.check(services)
    return render(
        request,
        "ops.html",
        backlog=backlog,
        halted=halts.halted(services.db),
        failed=backlog.by_status.get("failed", 0),
        unknown_left=delivery.unknown_left(services.db),
        ready=ready,
        processes=[
            (s, readiness.describe_age(max(0.0, (now - s.at).total_seconds()))) for s in seen
        ],
        jobs=[
            (job, readiness.describe_age(ready.age(heartbeats.Kind.JOB, job.name))) for job in jobs
        ],
        outcomes=outcomes,
        beat_silent_seconds=services.settings.beat_silent_seconds,
    )


#: Processes not seen for this long drop off the page (each restart adds a row).
PROCESSES_SEEN_WITHIN = timedelta(days=1)
#: The window of the provider error rates (the alert rules use the same hour).
ERROR_RATE_OVER = timedelta(hours=1)
#: Rows per page of a list of failed or unconfirmed messages.
PAGE = 100


@router.get("/ops/messages/{status}", response_class=HTMLResponse)
@requires(Permission.OPERATE)
def not_gone(
    request: Request,
    services: ServicesDep,
    status: str,
    before: int | None = Query(None, ge=1, description="show messages with smaller ids"),
) -> Response:
    """The failed (or unconfirmed) messages by id, newest first: what `campaigns requeue`
    takes. Keyset pages on the id, never OFFSET."""
    try:
        chosen = MessageStatus(status)
    except ValueError:
        raise HTTPException(404, "no such list") from None
    if chosen not in {MessageStatus.FAILED, MessageStatus.UNKNOWN}:
        raise HTTPException(404, "no such list")
    with services.db.session() as session:
        rows = queries.not_gone(session, chosen, before=before, limit=PAGE + 1)
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return render(
        request,
        "ops_messages.html",
        status=chosen,
        rows=rows,
        next_before=rows[-1].id if more and rows else None,
    )


@router.post("/ops/channels/{channel}/resume")
@requires(Permission.OPERATE)
def resume_channel(
    request: Request, services: ServicesDep, staff: StaffDep, channel: str
) -> Response:
    try:
        chosen = Channel(channel)
    except ValueError:
        raise HTTPException(404, "no such channel") from None
    resumed = halts.resume(services.db, chosen, services.clock.now(), actor=staff.user.actor)
    if not resumed:
        return back(request, "/staff/ops", problem=f"{chosen.value} was not halted.")
    return back(request, "/staff/ops", notice=f"{chosen.value.upper()} sending resumed.")


@router.post("/ops/requeue-failed")
@requires(Permission.OPERATE)
def requeue_failed(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    """Every failed message back in the queue (never unknown ones: they may have gone)."""
    return _requeue(request, services, staff, unknown=False)


@router.post("/ops/requeue-unknown")
@requires(Permission.OPERATE)
def requeue_unknown(request: Request, services: ServicesDep, staff: StaffDep) -> Response:
    """Unknown sends that reconciliation left for staff (the provider could not say)."""
    return _requeue(request, services, staff, unknown=True)


def _requeue(request: Request, services: Services, staff: Current, *, unknown: bool) -> Response:
    what = "unconfirmed" if unknown else "failed"
    try:
        done = delivery.requeue_all(
            services.db, services.clock.now(), actor=staff.user.actor, unknown=unknown
        )
    except StateError as exc:  # one changed meanwhile: the pages done stay done
        return back(request, "/staff/ops", problem=f"Not all {what} messages were queued: {exc}")
    return back(request, "/staff/ops", notice=f"{done} {what} messages are queued again.")
