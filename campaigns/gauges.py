"""The database's state as Prometheus gauges, read when Prometheus scrapes the staff listener
(so they are right however many processes run): the outbox by status, what is due and how
late, what is stuck, open alerts, halted channels, heartbeats and the plans' horizon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from campaigns import alerts, halts, heartbeats, queries, upkeep
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import Channel, EnrollmentStatus, MessageStatus
from campaigns.rules.window import zone
from campaigns.storage.models import Enrollment
from campaigns.storage.models import ScheduledMessage as SM
from campaigns.storage.outbox import lease_lapsed

#: A plan whose written rows end sooner than this is behind (campaigns_horizon_backlog).
HORIZON_BEHIND = timedelta(days=2)
#: Every gauge DatabaseGauges yields (the alert rules and the dashboard are checked against
#: these and campaigns.metrics: tests/contract/test_monitoring.py).
NAMES = (
    "campaigns_messages",
    "campaigns_due_messages",
    "campaigns_due_lag_seconds",
    "campaigns_stuck_messages",
    "campaigns_unknown_for_staff",
    "campaigns_horizon_backlog",
    "campaigns_send_window_open",
    "campaigns_channel_halted",
    "campaigns_alerts_open",
    "campaigns_alert_oldest_open_seconds",
    "campaigns_last_success_timestamp_seconds",
    "campaigns_job_period_seconds",
)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class DatabaseGauges(Collector):
    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._outbox()
        yield from self._alerts_and_halts()
        yield from self._heartbeats()

    def _outbox(self) -> Iterator[GaugeMetricFamily]:
        services, now = self.services, self.services.clock.now()
        policy = services.policy
        with services.db.session() as session:
            found = queries.backlog(session, now)
            claimed = select(func.count()).where(
                SM.status == MessageStatus.CLAIMED.value,
                SM.claimed_at < now - timedelta(seconds=policy.claim_timeout_seconds),
            )
            sending = select(func.count()).where(
                SM.status == MessageStatus.SENDING.value,
                lease_lapsed(now - timedelta(seconds=policy.send_lease_seconds)),
            )
            stuck = {
                "claimed": session.execute(claimed).scalar_one(),
                "sending": session.execute(sending).scalar_one(),
            }
            behind = session.execute(
                select(func.count()).where(
                    Enrollment.status == EnrollmentStatus.ACTIVE.value,
                    Enrollment.planned_until < now + HORIZON_BEHIND,
                )
            ).scalar_one()
        messages = _gauge("campaigns_messages", "Scheduled messages by status.", ["status"])
        for state in MessageStatus:
            messages.add_metric([state.value], found.by_status.get(state.value, 0))
        yield messages
        yield GaugeMetricFamily(
            "campaigns_due_messages", "Pending messages whose time has come.", found.due_now
        )
        yield GaugeMetricFamily(
            "campaigns_due_lag_seconds", "Age of the oldest due message.", found.oldest_due_seconds
        )
        stuck_gauge = _gauge(
            "campaigns_stuck_messages",
            "Claimed or sending rows older than the reaper's threshold (the reaper is not "
            "taking them back).",
            ["status"],
        )
        for status, count in stuck.items():
            stuck_gauge.add_metric([status], count)
        yield stuck_gauge
        yield GaugeMetricFamily(
            "campaigns_unknown_for_staff",
            "Unknown sends the provider could not settle, waiting for staff.",
            found.unknown_for_staff,
        )
        yield GaugeMetricFamily(
            "campaigns_horizon_backlog",
            "Active enrollments whose written plan ends within 2 days (the horizon job is behind).",
            behind,
        )
        tz = zone(services.settings.default_timezone)
        yield GaugeMetricFamily(
            "campaigns_send_window_open",
            "1 while the clinic's send window is open (its default timezone).",
            int(services.window.is_open(now, tz)),
        )

    def _alerts_and_halts(self) -> Iterator[GaugeMetricFamily]:
        now = self.services.clock.now()
        with self.services.db.session() as session:
            open_alerts = alerts.open_counts(session)
        stopped = halts.halted(self.services.db)
        halted = _gauge(
            "campaigns_channel_halted",
            "1 while a channel is stopped by a provider account error.",
            ["channel"],
        )
        for channel in Channel:
            halted.add_metric([channel.value], int(channel.value in stopped))
        yield halted
        counts = _gauge(
            "campaigns_alerts_open", "Staff alerts waiting for acknowledgement.", ["severity"]
        )
        oldest = _gauge(
            "campaigns_alert_oldest_open_seconds",
            "Age of the oldest unacknowledged alert of each severity (0: none open).",
            ["severity"],
        )
        for severity, count in sorted(open_alerts.by_severity.items()):
            counts.add_metric([severity], count)
            first = open_alerts.oldest_by_severity.get(severity)
            oldest.add_metric([severity], (now - first).total_seconds() if first else 0.0)
        yield counts
        yield oldest

    def _heartbeats(self) -> Iterator[GaugeMetricFamily]:
        with self.services.db.session() as session:
            seen = heartbeats.newest(session)
        last = _gauge(
            "campaigns_last_success_timestamp_seconds",
            "When beat last ticked, each periodic job last succeeded, and each worker queue "
            "last drained its heartbeat task (Unix time).",
            ["kind", "name"],
        )
        for (kind, name), at in sorted(seen.items()):
            last.add_metric([kind.value, name], at.timestamp())
        yield last
        periods = _gauge("campaigns_job_period_seconds", "Each periodic job's period.", ["name"])
        for job in upkeep.JOBS:
            periods.add_metric([job.name], job.every(self.services.settings))
        yield periods
