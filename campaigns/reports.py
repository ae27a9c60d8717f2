"""The staff reports' reads: a period's counts from the daily rollups (campaigns.rollups), never
the outbox, plus the period's alerts (a small table: one row a danger sign or loss to look at).

Everything here is a count, a rate or a duration: no patient is named or numbered.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from campaigns.rollups import bounds
from campaigns.rules import reports as rules
from campaigns.rules.catalog import Catalog
from campaigns.rules.reports import Period
from campaigns.rules.vocabulary import MessageStatus
from campaigns.storage.models import Alert, PeriodicRun, ReportDaily

RD = ReportDaily
#: Alert severities, most urgent first (any other is listed after them).
SEVERITIES = ("red", "amber", "routine", "review")
#: Periods longer than this are charted by week, longer than LONG by month.
BY_WEEK = 62
LONG = 400


@dataclass(frozen=True)
class Figures:
    """The counts of one line of a table (a step, a channel, a day, or everything)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def of(self, *metrics: str) -> int:
        return sum(self.counts.get(m, 0) for m in metrics)

    def starting(self, prefix: str) -> int:
        return sum(c for m, c in self.counts.items() if m.startswith(prefix))

    def status(self, *statuses: MessageStatus) -> int:
        return self.of(*(rules.MESSAGE + s.value for s in statuses))

    @property
    def sent(self) -> int:
        return self.status(*rules.SENT)

    @property
    def delivered(self) -> int:
        return self.status(MessageStatus.DELIVERED)

    @property
    def not_delivered(self) -> int:
        return self.status(*rules.NOT_DELIVERED)

    @property
    def failed(self) -> int:
        return self.status(MessageStatus.FAILED)

    @property
    def unknown(self) -> int:
        return self.status(MessageStatus.UNKNOWN)

    @property
    def waiting(self) -> int:
        return self.status(*rules.WAITING)

    @property
    def not_sent(self) -> int:
        return self.status(MessageStatus.CANCELLED, MessageStatus.EXPIRED, MessageStatus.SKIPPED)

    @property
    def clicks(self) -> int:
        return self.of(rules.CLICK)

    @property
    def opt_outs(self) -> int:
        return self.starting(rules.OPT_OUT)

    @property
    def replies(self) -> int:
        return self.starting(rules.REPLY)

    @property
    def click_through(self) -> float | None:
        return self.clicks / self.delivered if self.delivered else None

    @property
    def opt_out_rate(self) -> float | None:
        return self.opt_outs / self.sent if self.sent else None

    @property
    def delivery_rate(self) -> float | None:
        return self.delivered / self.sent if self.sent else None


@dataclass(frozen=True)
class Line:
    """A table row: a name (a campaign's and a step's, a channel, a day) and its figures."""

    key: tuple[str, ...]
    name: str
    detail: str
    figures: Figures


@dataclass(frozen=True)
class AlertFigures:
    severity: str
    raised: int
    acknowledged: int
    median_seconds: float | None
    p90_seconds: float | None

    @property
    def open(self) -> int:
        return self.raised - self.acknowledged


@dataclass(frozen=True)
class Report:
    period: Period
    total: Figures
    steps: list[Line]
    channels: list[Line]
    days: list[Line]
    opt_outs: list[tuple[str, int]]  # route, count
    replies: list[tuple[str, int]]  # intent, count
    alerts: list[AlertFigures]
    enrolments: list[tuple[str, str, int]]  # campaign, source, count
    stages: list[tuple[str, str, int]]  # campaign, stage, count
    stages_on: date | None
    updated_at: datetime | None
    by: str  # day, week or month


def read(session: Session, period: Period, timezone: str, catalog: Catalog) -> Report:
    """The period's report, from the rollups and the period's alerts."""
    rows = session.execute(
        select(RD.campaign, RD.step_key, RD.channel, RD.metric, func.sum(RD.count))
        .where(RD.day >= period.start, RD.day <= period.end, ~RD.metric.startswith(rules.STAGE))
        .group_by(RD.campaign, RD.step_key, RD.channel, RD.metric)
    ).all()
    steps: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    channels: dict[str, Counter[str]] = defaultdict(Counter)
    total: Counter[str] = Counter()
    enrolments: Counter[tuple[str, str]] = Counter()
    for campaign, step, channel, metric, count in rows:
        if metric.startswith(rules.ENROLMENT):
            enrolments[campaign, metric.removeprefix(rules.ENROLMENT)] += int(count)
            continue
        steps[campaign, step][metric] += int(count)
        if channel:
            channels[channel][metric] += int(count)
        total[metric] += int(count)
    summed = Figures(total)
    stages_on, stages = _stages(session, period.end)
    by, days = _days(session, period)
    return Report(
        period=period,
        total=summed,
        steps=_step_lines(steps, catalog),
        channels=[
            Line((c,), "Text (SMS)" if c == "sms" else "Email", "", Figures(channels[c]))
            for c in sorted(channels, key=lambda c: (c != "sms", c))
        ],
        days=days,
        opt_outs=_ranked(summed, rules.OPT_OUT, rules.ROUTE_NAMES),
        replies=_ranked(summed, rules.REPLY, {}),
        alerts=_alerts(session, period, timezone),
        enrolments=[
            (_campaign_name(c, catalog), s, n)
            for (c, s), n in sorted(enrolments.items(), key=lambda i: (i[0][0], -i[1]))
        ],
        stages=[(_campaign_name(c, catalog), s, n) for c, s, n in stages],
        stages_on=stages_on,
        updated_at=session.execute(
            select(PeriodicRun.succeeded_at).where(PeriodicRun.name == "report_rollups")
        ).scalar_one_or_none(),
        by=by,
    )


def _ranked(total: Figures, prefix: str, order: Mapping[str, str]) -> list[tuple[str, int]]:
    """(what, count) for each metric under `prefix`: the listed ones first, in their order
    (with a zero), then the others, most first."""
    found = {m.removeprefix(prefix): c for m, c in total.counts.items() if m.startswith(prefix)}
    listed = [(k, found.pop(k, 0)) for k in order]
    return listed + sorted(found.items(), key=lambda i: (-i[1], i[0]))


def _campaign_name(key: str, catalog: Catalog) -> str:
    if key in rules.LINE_NAMES:
        return rules.LINE_NAMES[key]
    return catalog[key].name if key in catalog else key


def _step_lines(steps: Mapping[tuple[str, str], Counter[str]], catalog: Catalog) -> list[Line]:
    """One line a campaign step, in the catalog's order; then steps it no longer has, other
    campaigns, broadcasts, staff replies, and what followed no message."""
    order: dict[tuple[str, str], tuple[int, int, str]] = {}
    for rank, (key, campaign) in enumerate(catalog.items()):
        for number, step in enumerate(campaign.steps):
            order[key, step.key] = (rank, number, "")
    ends = {rules.BROADCASTS: 10**6, rules.STAFF_REPLIES: 10**6 + 1, rules.NO_MESSAGE: 10**6 + 2}

    def place(key: tuple[str, str]) -> tuple[int, int, str]:
        if key in order:
            return order[key]
        campaign, step = key
        known = list(catalog).index(campaign) if campaign in catalog else len(catalog)
        return (ends.get(campaign, known), 10**6, campaign + "\0" + step)

    return [
        Line(key, _campaign_name(key[0], catalog), key[1], Figures(steps[key]))
        for key in sorted(steps, key=place)
    ]


def _stages(session: Session, end: date) -> tuple[date | None, list[tuple[str, str, int]]]:
    """The latest stage snapshot on or before `end`: (campaign, stage, count), stage order."""
    is_stage = RD.metric.startswith(rules.STAGE)
    on = session.execute(select(func.max(RD.day)).where(RD.day <= end, is_stage)).scalar()
    if on is None:
        return None, []
    rows = session.execute(
        select(RD.campaign, RD.metric, RD.count).where(RD.day == on, is_stage)
    ).all()
    place = {s: n for n, s in enumerate(rules.STAGES)}
    found = [(c, m.removeprefix(rules.STAGE), int(n)) for c, m, n in rows]
    return on, sorted(found, key=lambda r: (r[0], place.get(r[1], len(place)), r[1]))


def _days(session: Session, period: Period) -> tuple[str, list[Line]]:
    """The sends of each day (or week, or month) of the period, every one listed."""
    rows = session.execute(
        select(RD.day, RD.metric, func.sum(RD.count))
        .where(RD.day >= period.start, RD.day <= period.end, RD.metric.startswith(rules.MESSAGE))
        .group_by(RD.day, RD.metric)
    ).all()
    by = "day" if period.days <= BY_WEEK else "week" if period.days <= LONG else "month"
    buckets: dict[date, Counter[str]] = {}
    for day in period.each_day():
        buckets.setdefault(_bucket(day, by), Counter())
    for day, metric, count in rows:
        buckets[_bucket(day, by)][metric] += int(count)
    return by, [
        Line((first.isoformat(),), _bucket_name(first, by), "", Figures(counts))
        for first, counts in buckets.items()
    ]


def _bucket(day: date, by: str) -> date:
    if by == "week":
        return day - timedelta(days=day.weekday())
    if by == "month":
        return day.replace(day=1)
    return day


def _bucket_name(first: date, by: str) -> str:
    if by == "month":
        return rules.month_name(first)
    label = f"{first.day} {rules.month_name(first)}"
    return f"Week of {label}" if by == "week" else label


def _alerts(session: Session, period: Period, timezone: str) -> list[AlertFigures]:
    """Alerts raised in the period, by severity, and how long staff took to acknowledge them
    (the alerts table is small: one row a danger sign, loss or text needing staff)."""
    start, _ = bounds(period.start, timezone)
    _, end = bounds(period.end, timezone)
    waits: dict[str, list[float]] = {s: [] for s in SEVERITIES}
    raised: Counter[str] = Counter()
    for severity, created, acknowledged in session.execute(
        select(Alert.severity, Alert.created_at, Alert.acknowledged_at).where(
            Alert.created_at >= start, Alert.created_at < end
        )
    ):
        raised[severity] += 1
        if acknowledged is not None:
            waits.setdefault(severity, []).append((acknowledged - created).total_seconds())
    found = []
    for severity in [*SEVERITIES, *sorted(set(raised) - set(SEVERITIES))]:
        times = sorted(waits.get(severity, []))
        found.append(
            AlertFigures(
                severity,
                raised[severity],
                len(times),
                rules.percentile(times, 0.5),
                rules.percentile(times, 0.9),
            )
        )
    return found


# -- the tables as CSV ---------------------------------------------------------------------------

TABLES = {
    "steps": "Messages by campaign and step",
    "channels": "Messages by channel",
    "days": "Messages by day",
    "opt-outs": "Opt-outs by route",
    "replies": "Replies by intent",
    "alerts": "Alerts by severity",
    "enrolments": "Enrolments by source",
    "stages": "Enrolments by stage",
}
_FIGURES = [
    "Sent",
    "Delivered",
    "Bounced or undelivered",
    "Failed",
    "Unknown",
    "Waiting",
    "Not sent (cancelled, expired)",
    "Booking-link clicks",
    "Click-through",
    "Opt-outs after",
    "Opt-out rate",
    "Replies after",
]


def _figure_cells(f: Figures) -> list[object]:
    return [
        f.sent,
        f.delivered,
        f.not_delivered,
        f.failed,
        f.unknown,
        f.waiting,
        f.not_sent,
        f.clicks,
        _ratio(f.click_through),
        f.opt_outs,
        _ratio(f.opt_out_rate),
        f.replies,
    ]


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def table(report: Report, name: str) -> tuple[list[str], list[Sequence[object]]]:
    """One of the page's tables (TABLES) as a header and rows, for a CSV file."""
    if name == "steps":
        return ["Campaign", "Step", *_FIGURES], [
            [line.name, line.detail, *_figure_cells(line.figures)] for line in report.steps
        ]
    if name in ("channels", "days"):
        lines = report.channels if name == "channels" else report.days
        first = "Channel" if name == "channels" else report.by.capitalize()
        return [first, *_FIGURES], [[line.name, *_figure_cells(line.figures)] for line in lines]
    if name == "opt-outs":
        return ["Route", "Opt-outs"], [[rules.ROUTE_NAMES.get(r, r), n] for r, n in report.opt_outs]
    if name == "replies":
        return ["Intent", "Replies"], [[i, n] for i, n in report.replies]
    if name == "alerts":
        return [
            "Severity",
            "Raised",
            "Acknowledged",
            "Open",
            "Median seconds to acknowledge",
            "90th percentile seconds to acknowledge",
        ], [
            [
                a.severity,
                a.raised,
                a.acknowledged,
                a.open,
                _seconds(a.median_seconds),
                _seconds(a.p90_seconds),
            ]
            for a in report.alerts
        ]
    if name == "enrolments":
        return ["Campaign", "Source", "Enrolments"], [
            [c, rules.SOURCE_NAMES.get(s, s), n] for c, s, n in report.enrolments
        ]
    if name == "stages":
        on = report.stages_on.isoformat() if report.stages_on else ""
        return ["On", "Campaign", "Stage", "Enrolments"], [
            [on, c, rules.STAGE_NAMES.get(s, s), n] for c, s, n in report.stages
        ]
    raise KeyError(name)


def _seconds(value: float | None) -> str:
    return "" if value is None else str(round(value))
