"""Liveness, readiness and metrics for operators and their monitoring."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from campaigns import alerts, halts, views
from campaigns.domain import Channel
from campaigns.web.deps import ServicesDep

router = APIRouter()


@router.get("/healthz")
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
def metrics(services: ServicesDep) -> str:
    """Prometheus text format: messages by status, the due backlog and its lag, halts, alerts."""
    now = services.clock.now()
    with services.db.session() as session:
        found = views.backlog(session, now)
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
