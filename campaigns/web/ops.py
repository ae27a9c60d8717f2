"""Liveness, readiness and metrics for operators and their monitoring.

/healthz and /readyz answer anyone (they name nothing); /metrics answers a signed-in operator
or admin, or Prometheus with `Authorization: Bearer <CAMPAIGNS_METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from campaigns import metrics, readiness
from campaigns.gauges import DatabaseGauges
from campaigns.rules.roles import Permission, may
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
    """Ready to do the work: the database answers and holds the schema, the broker answers,
    and a beat has ticked within CAMPAIGNS_BEAT_SILENT_SECONDS. Names parts, never data."""
    found = readiness.check(services)
    body: dict[str, object] = {
        "status": "ready" if found.ready else "unavailable",
        "database": found.database,
        "broker": found.broker,
        "beat": found.beat,
    }
    if found.ready:
        body["campaigns"] = sorted(services.catalog)
    return JSONResponse(body, status_code=200 if found.ready else 503)


@router.get("/metrics")
def metrics_page(
    services: ServicesDep, _reader: Annotated[str, Depends(metrics_reader)]
) -> Response:
    """Prometheus text format: this listener's counters (every process of it), then the
    database's state (campaigns.gauges)."""
    return Response(metrics.exposition(DatabaseGauges(services)), media_type=CONTENT_TYPE_LATEST)
