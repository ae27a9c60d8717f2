"""Reports: how the programme does over a period, per campaign and step, read from the daily
rollups (campaigns.reports), with charts and every table as a CSV file (each download audited).

Counts only, so every role may read them (Permission.VIEW_REPORTS), operators included.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from campaigns import audit, reports, rollups
from campaigns.reports import Report
from campaigns.rules import reports as rules
from campaigns.rules.errors import InputError
from campaigns.rules.reports import Period
from campaigns.rules.roles import Permission
from campaigns.web import charts
from campaigns.web.charts import Series
from campaigns.web.deps import ServicesDep
from campaigns.web.guard import StaffDep, requires, signed_in
from campaigns.web.pages import render

router = APIRouter(prefix="/staff", include_in_schema=False, dependencies=[Depends(signed_in)])
FromQuery = Annotated[str, Query(alias="from")]


def _period(services: ServicesDep, start: str, end: str, preset: str) -> Period:
    today = rollups.local_today(services.clock.now(), services.settings.default_timezone)
    return rules.parse_period(start, end, preset, today)


def _read(services: ServicesDep, period: Period) -> Report:
    with services.db.session() as session:
        return reports.read(session, period, services.settings.default_timezone, services.catalog)


@router.get("/reports", response_class=HTMLResponse)
@requires(Permission.VIEW_REPORTS)
def report_page(
    request: Request,
    services: ServicesDep,
    start: FromQuery = "",
    to: str = "",
    preset: str = "",
) -> HTMLResponse:
    error: InputError | None = None
    try:
        period = _period(services, start, to, preset)
    except InputError as exc:
        error = exc
        period = _period(services, "", "", "")
    found = _read(services, period)
    args = urlencode({"from": period.start.isoformat(), "to": period.end.isoformat()})
    return render(
        request,
        "reports.html",
        status_code=400 if error else 200,
        error=error,
        values={"from": start, "to": to},
        report=found,
        period=period,
        presets=rules.PRESETS,
        csv_args=args,
        tables=reports.TABLES,
        charts=_charts(found),
        legends=_legends(),
        rules=rules,
        after_days=rules.AFTER.days,
    )


@router.get("/reports.csv")
@requires(Permission.VIEW_REPORTS)
def report_csv(
    services: ServicesDep,
    staff: StaffDep,
    table: str = "steps",
    start: FromQuery = "",
    to: str = "",
    preset: str = "",
) -> Response:
    if table not in reports.TABLES:
        raise HTTPException(404, "no such table")
    try:
        period = _period(services, start, to, preset)
    except InputError as exc:
        raise HTTPException(400, f"{exc.field}: {exc.message}") from None
    found = _read(services, period)
    header, rows = reports.table(found, table)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    with services.db.session() as session:
        audit.record(
            session,
            services.clock.now(),
            staff.user.actor,
            "report_exported",
            table=table,
            start=period.start.isoformat(),
            end=period.end.isoformat(),
            rows=len(rows),
        )
    name = f"report-{table}-{period.start.isoformat()}-to-{period.end.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


SENDS = (
    ("Delivered", "s1", "delivered"),
    ("Sent, no receipt yet", "s2", "sent_only"),
    ("Bounced or undelivered", "s3", "not_delivered"),
    ("Failed", "s4", "failed"),
    ("Unknown", "s5", "unknown"),
)


def _sends(lines: list[reports.Line]) -> list[Series]:
    def value(f: reports.Figures, what: str) -> float:
        if what == "sent_only":
            return f.sent - f.delivered - f.not_delivered
        return float(getattr(f, what))

    return [
        Series(name, css, [value(line.figures, what) for line in lines])
        for name, css, what in SENDS
    ]


def _legends() -> dict[str, Markup]:
    return {
        "sends": charts.legend([Series(name, css, []) for name, css, _ in SENDS]),
        "events": charts.legend(
            [
                Series("Booking-link clicks", "s6", []),
                Series("Opt-outs", "s3", []),
                Series("Replies", "s2", []),
            ]
        ),
    }


def _charts(found: Report) -> dict[str, Markup]:
    """Every chart of the page, each drawn from the table shown beside it."""
    steps = found.steps
    step_names = [f"{line.name}: {line.detail}" if line.detail else line.name for line in steps]
    span = f"{found.period.start:%d %b %Y} to {found.period.end:%d %b %Y}"
    made = {
        "days": charts.columns(
            "chart-days",
            f"Messages by {found.by}",
            f"Messages due each {found.by} from {span}, stacked by what happened to them.",
            [line.name for line in found.days],
            _sends(found.days),
        ),
        "steps": charts.bars(
            "chart-steps",
            "Messages by step",
            f"Messages of each campaign step, {span}, by what happened to them.",
            step_names,
            _sends(steps),
        ),
        "events": charts.bars(
            "chart-events",
            "Clicks, opt-outs and replies after each step",
            f"Booking-link clicks, opt-outs and replies, {span}, by the message they followed.",
            step_names,
            [
                Series("Booking-link clicks", "s6", [line.figures.clicks for line in steps]),
                Series("Opt-outs", "s3", [line.figures.opt_outs for line in steps]),
                Series("Replies", "s2", [line.figures.replies for line in steps]),
            ],
        ),
    }
    made.update(_small_charts(found, span))
    return made


def _small_charts(found: Report, span: str) -> dict[str, Markup]:
    def one(ident: str, title: str, items: list[tuple[str, float]], css: str) -> Markup:
        return charts.bars(
            ident,
            title,
            f"{title}, {span}.",
            [name for name, _ in items],
            [Series(title, css, [n for _, n in items])],
        )

    stage_totals: dict[str, float] = {}
    for _, stage, n in found.stages:
        name = rules.STAGE_NAMES.get(stage, stage)
        stage_totals[name] = stage_totals.get(name, 0) + n
    source_totals: dict[str, float] = {}
    for _, source, n in found.enrolments:
        name = rules.SOURCE_NAMES.get(source, source)
        source_totals[name] = source_totals.get(name, 0) + n
    return {
        "opt_outs": one(
            "chart-opt-outs",
            "Opt-outs by route",
            [(rules.ROUTE_NAMES.get(r, r), n) for r, n in found.opt_outs],
            "s3",
        ),
        "replies": one(
            "chart-replies",
            "Replies by intent",
            [(i.replace("_", " "), n) for i, n in found.replies],
            "s2",
        ),
        "alerts": one(
            "chart-alerts", "Alerts raised", [(a.severity, a.raised) for a in found.alerts], "s4"
        ),
        "sources": one("chart-sources", "Enrolments by source", list(source_totals.items()), "s1"),
        "stages": one("chart-stages", "Enrolments by stage", list(stage_totals.items()), "s6"),
    }
