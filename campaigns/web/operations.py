"""The operator's page: the backlog, halted channels (resume), and failed or unconfirmed sends
(requeue). Counts only: no patient's name, number or message is on it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from campaigns import delivery, halts, queries
from campaigns.bootstrap import Services
from campaigns.rules.errors import StateError
from campaigns.rules.roles import Permission
from campaigns.rules.vocabulary import Channel
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
    return render(
        request,
        "ops.html",
        backlog=backlog,
        halted=halts.halted(services.db),
        failed=backlog.by_status.get("failed", 0),
        unknown_left=delivery.unknown_left(services.db),
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
