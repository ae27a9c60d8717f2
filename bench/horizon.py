"""The horizon job at a million active enrolments, on PostgreSQL.

    .venv/bin/python -m bench.horizon [--patients 1000000] [--batch 500]

Patients are enrolled in seven daily cohorts (the clock moves a day between them), so their
plans' written horizons end on seven different days, as they do in a clinic that enrols
every day. The clock then moves to the day the first cohort's horizon falls within half the
planning horizon of now: exactly one day's worth of plans (a seventh) needs extending, which
is what the hourly job meets each day. Measured: the whole extension (`extend_plans`, the
beat job's work), its batches, the rows written, the backlog gauge before and after, and the
job's cost when nothing is left to do (every hour's run but one).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from bench.common import fresh_postgres, save
from bench.enroll import requests
from campaigns import enrollments, scheduling
from campaigns.bootstrap import build
from campaigns.rules.clock import MovableClock
from campaigns.rules.vocabulary import ConsentSource
from campaigns.settings import Settings
from campaigns.storage.models import Enrollment, ScheduledMessage

COHORTS = 7


def _count(services: object, query: object) -> int:
    with services.db.session() as session:  # type: ignore[attr-defined]
        return int(session.execute(query).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--enrol-batch", type=int, default=10_000)
    args = parser.parse_args()
    start = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    clock = MovableClock(start)
    with fresh_postgres("bench_horizon") as url:
        services = build(Settings(database_url=url), clock=clock)
        everyone = requests(args.patients, start)
        per_cohort = -(-len(everyone) // COHORTS)
        enrol_started = time.perf_counter()
        for cohort in range(COHORTS):
            chunk = everyone[cohort * per_cohort : (cohort + 1) * per_cohort]
            for first in range(0, len(chunk), args.enrol_batch):
                enrollments.enroll_many(
                    services.db,
                    services.planner,
                    chunk[first : first + args.enrol_batch],
                    clock.now(),
                    source=ConsentSource.CSV,
                    actor="bench",
                )
            clock.advance(timedelta(days=1))
        enrol_seconds = time.perf_counter() - enrol_started
        # As autovacuum would have by then: fresh statistics for the planner.
        autocommit = services.db.engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            connection.execute(text("VACUUM ANALYZE"))
        # The day the first cohort's horizon comes within half the horizon of now.
        horizon = services.planner.horizon
        clock.advance(horizon / 2 - timedelta(days=COHORTS) + timedelta(minutes=1))
        now = clock.now()
        threshold = now + horizon / 2
        due_query = select(func.count()).where(
            Enrollment.status == "active", Enrollment.planned_until < threshold
        )
        active = _count(services, select(func.count()).where(Enrollment.status == "active"))
        rows_before = _count(services, select(func.count()).select_from(ScheduledMessage))
        backlog_before = _count(services, due_query)
        started = time.perf_counter()
        total = scheduling.extend_plans(services.db, services.planner, now, batch_size=args.batch)
        seconds = time.perf_counter() - started
        backlog_after = _count(services, due_query)
        rows_after = _count(services, select(func.count()).select_from(ScheduledMessage))
        idle: list[float] = []
        for _ in range(5):
            t0 = time.perf_counter()
            nothing = scheduling.extend_plans(
                services.db, services.planner, now, batch_size=args.batch
            )
            idle.append(time.perf_counter() - t0)
            assert nothing.enrollments == 0
        services.close()
    result = {
        "patients": args.patients,
        "active_enrollments": active,
        "cohorts": COHORTS,
        "enrol_seconds": round(enrol_seconds, 1),
        "outbox_rows_before": rows_before,
        "due_for_extension": backlog_before,
        "extended_enrollments": total.enrollments,
        "rows_written": total.rows,
        "outbox_rows_after": rows_after,
        "left_due_after": backlog_after,
        "batch_size": args.batch,
        "batches": total.batches,
        "seconds": round(seconds, 1),
        "enrollments_per_second": round(total.enrollments / seconds) if seconds else 0,
        "mean_batch_seconds": round(seconds / total.batches, 3) if total.batches else 0,
        "idle_run_median_ms": round(statistics.median(idle) * 1000, 1),
    }
    print(result)
    save("horizon", result)


if __name__ == "__main__":
    main()
