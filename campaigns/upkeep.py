"""The periodic jobs, written once: Celery beat (workers.app) and the embedded runtime
(campaigns.runtime) both take their jobs and periods from `JOBS`.

Future sends live in the database, never in the broker: `dispatch_due` claims due rows and
publishes send batches (ids only); the others find lost work, settle unknown sends, extend the
rolling plan horizon, tidy up, and delete outbox rows past the records policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from campaigns import (
    alerts,
    delivery,
    housekeeping,
    reconciling,
    retention,
    rollups,
    scheduling,
    staff_sessions,
)
from campaigns.bootstrap import Services
from campaigns.settings import Settings
from campaigns.staff_sessions import Timeouts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    name: str  # Celery's task is "campaigns.<name>"
    period: Callable[[Settings], float]  # seconds between runs
    run: Callable[[Services, delivery.SendQueue], object]
    #: A queued run older than this many periods is dropped (the next one will do its work).
    expires_after: float = 5.0

    def every(self, settings: Settings) -> float:
        return self.period(settings)


def run_logged(job: Job, services: Services, queue: delivery.SendQueue) -> object:
    """Run the job; say so at INFO when it did something, at DEBUG when there was nothing to
    do (an idle system logs nothing at INFO)."""
    done = job.run(services, queue)
    busy = bool(done) and not (isinstance(done, dict) and not any(done.values()))
    log.log(
        logging.INFO if busy else logging.DEBUG,
        "%s: %s",
        job.name,
        done,
        extra={"event": f"job.{job.name}"},
    )
    return done


def dispatch_due(services: Services, queue: delivery.SendQueue) -> int:
    return delivery.dispatch_due(services.db, queue, services.clock, services.policy)


def email_alerts(services: Services, _queue: delivery.SendQueue | None = None) -> int:
    """RED and AMBER alerts to the clinic's alert address, within seconds of the reply."""
    settings = services.settings
    return alerts.email_pending(
        services.db,
        services.email,
        settings.alert_email,
        settings.public_url,
        settings.clinic_name,
        services.clock.now(),
    )


def reap(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """Lost tasks and dead workers' batches, taken back within seconds."""
    reaped = delivery.reap(services.db, services.clock.now(), services.policy)
    return {"claims": reaped.claims, "released": reaped.released, "unknown": reaped.unknown}


def reconcile(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    return dict(
        reconciling.reconcile(
            services.db, services.sms, services.email, services.clock.now(), services.policy
        )
    )


def extend_plans(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """Every active plan's next days written, in batches until none is left."""
    done = scheduling.extend_plans(services.db, services.planner, services.clock.now())
    return {"enrollments": done.enrollments, "rows": done.rows, "batches": done.batches}


def tidy(services: Services, _queue: delivery.SendQueue) -> None:
    """Pause enrollments past 42 weeks with no birth, complete finished ones, and delete staff
    sessions past their timeouts."""
    now = services.clock.now()
    housekeeping.pause_overdue(services.db, now)
    housekeeping.complete_finished(services.db, services.catalog, now)
    staff_sessions.purge_expired(services.db, now, Timeouts.of(services.settings))


def prune_old(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """Outbox rows past the records policy (CAMPAIGNS_RETENTION_DAYS) deleted, in batches."""
    done = retention.prune(services.db, services.clock.now(), services.settings.retention_days)
    return {**done.counts(), "batches": done.batches}


def report_rollups(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """The reports' counts of the last few days rebuilt (late receipts, replies, clicks)."""
    done = rollups.refresh(services.db, services.clock.now(), services.settings.default_timezone)
    return {"changed": done.changed}


def report_rollups_deep(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """The reports' counts of the last five weeks rebuilt: what changed long after its day."""
    done = rollups.refresh(
        services.db,
        services.clock.now(),
        services.settings.default_timezone,
        days=rollups.DEEP_DAYS,
    )
    return {"changed": done.changed}


def report_stages(services: Services, _queue: delivery.SendQueue) -> dict[str, int]:
    """Where every enrollment stands today (trimester, after the birth, ended), for reports."""
    settings = services.settings
    changed = rollups.snapshot_stages(
        services.db,
        services.clock.now(),
        settings.default_timezone,
        settings.trimester_convention,
    )
    return {"changed": changed}


#: The retention job runs once a day.
DAY = 86400.0

JOBS: tuple[Job, ...] = (
    Job("dispatch_due", lambda s: s.dispatch_interval_seconds, dispatch_due),
    Job("email_alerts", lambda s: s.dispatch_interval_seconds, email_alerts),
    Job("reap", lambda s: s.upkeep_interval_seconds, reap),
    Job("reconcile", lambda s: s.upkeep_interval_seconds, reconcile),
    Job("extend_plans", lambda _: 3600.0, extend_plans, expires_after=0.8),
    Job("housekeeping", lambda _: 600.0, tidy, expires_after=2.0),
    # A run queued for more than half a day is dropped: tomorrow's does its work.
    Job("retention", lambda _: DAY, prune_old, expires_after=0.5),
    Job("report_rollups", lambda _: 600.0, report_rollups, expires_after=2.0),
    Job("report_stages", lambda _: 3600.0, report_stages, expires_after=0.8),
    Job("report_rollups_deep", lambda _: DAY, report_rollups_deep, expires_after=0.5),
)
BY_NAME = {job.name: job for job in JOBS}
