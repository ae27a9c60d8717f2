"""Liveness, readiness and metrics for operators and their monitoring.

/healthz and /readyz answer anyone (they name nothing); /metrics answers a signed-in operator
or admin, or Prometheus with `Authorization: Bearer <CAMPAIGNS_METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from campaigns import alerts, halts, queries
from campaigns.rules.roles import Permission, may
from campaigns.rules.vocabulary import Channel
from campaigns.staff_sessions import Stage
from campaigns.web.deps import ServicesDep, get_services
from campaigns.web.guard import SignInRequired, current

router = APIRouter()  # the staff listener's: readiness and metrics
health = APIRouter()  # every listener's


async def metrics_reader(request: Request) -> str:
    """Who reads the metrics: "prometheus" (the bearer token) or the signed-in member."""
    services = get_services(request)
    token = services.settings.metrics_token
    given = request.headers.get("authorization", "")
    if token is not None and given.lower().startswith("bearer "):
        if hmac.compare_digest(given[7:].strip().encode(), token.get_secret_value().encode()):
            return "prometheus"
        raise HTTPException(401, "wrong metrics token", {"WWW-Authenticate": "Bearer"})
    try:
        staff = await current(request, frozenset({Stage.ACTIVE}))
    except SignInRequired:
        raise HTTPException(
            401, "sign in, or use the metrics token", {"WWW-Authenticate": "Bearer"}
        ) from None
    if not may(staff.role, Permission.OPERATE):
        raise HTTPException(403, "operators and admins only")
    return staff.user.actor


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it answers); says nothing about its dependencies. On the event loop
    itself, never in the thread pool: a pool busy with database work cannot delay it."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> Response:
    """Ready to serve: the database answers and holds the schema."""
    try:
        with services.db.session() as session:
            session.execute(text("SELECT 1 FROM scheduled_messages LIMIT 1"))
    except Exception as exc:  # any failure means not ready; the reason helps the operator
        return JSONResponse(
            {"status": "unavailable", "reason": type(exc).__name__}, status_code=503
        )
    return JSONResponse({"status": "ready", "campaigns": sorted(services.catalog)})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(services: ServicesDep, _reader: Annotated[str, Depends(metrics_reader)]) -> str:
    """Prometheus text format: messages by status, the due backlog and its lag, halts, alerts."""
    now = services.clock.now()
    with services.db.session() as session:
        found = queries.backlog(session, now)
        open_alerts = alerts.open_counts(session)
    stopped = halts.halted(services.db)
    oldest = (now - open_alerts.oldest).total_seconds() if open_alerts.oldest else 0.0
    lines = [
        "# HELP campaigns_messages Scheduled messages by status.",
        "# TYPE campaigns_messages gauge",
        *(
            f'campaigns_messages{{status="{status}"}} {count}'
            for status, count in sorted(found.by_status.items())
        ),
        "# HELP campaigns_due_messages Pending messages whose time has come.",
        "# TYPE campaigns_due_messages gauge",
        f"campaigns_due_messages {found.due_now}",
        "# HELP campaigns_due_lag_seconds Age of the oldest due message.",
        "# TYPE campaigns_due_lag_seconds gauge",
        f"campaigns_due_lag_seconds {found.oldest_due_seconds:.3f}",
        "# HELP campaigns_unknown_for_staff Unknown sends the provider could not settle.",
        "# TYPE campaigns_unknown_for_staff gauge",
        f"campaigns_unknown_for_staff {found.unknown_for_staff}",
        "# HELP campaigns_channel_halted 1 while a channel is stopped by a provider account error.",
        "# TYPE campaigns_channel_halted gauge",
        *(
            f'campaigns_channel_halted{{channel="{channel.value}"}} {int(channel.value in stopped)}'
            for channel in Channel
        ),
        "# HELP campaigns_alerts_open Staff alerts waiting for acknowledgement, by severity.",
        "# TYPE campaigns_alerts_open gauge",
        *(
            f'campaigns_alerts_open{{severity="{severity}"}} {count}'
            for severity, count in sorted(open_alerts.by_severity.items())
        ),
        "# HELP campaigns_alert_oldest_open_seconds Age of the oldest unacknowledged alert.",
        "# TYPE campaigns_alert_oldest_open_seconds gauge",
        f"campaigns_alert_oldest_open_seconds {oldest:.3f}",
    ]
    return "\n".join(lines) + "\n"
