"""Enrolment with planning, on PostgreSQL, through the bulk path (`enrol_many`).

    .venv/bin/python -m bench.enroll [--patients 100000] [--batch 10000]

Each patient gets programme consent (a third also marketing by SMS), both channels, a random
gestational age between 8+0 and 39+6, and a timezone from a realistic mix; every plan is the
real one (window, holidays, daily cap, catch-ups, skips); the sends due within the planning
horizon (14 days) are written as outbox rows, the rest as the horizon reaches them.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime

from sqlalchemy import func, select

from bench.common import fresh_postgres, save
from campaigns import enrollments
from campaigns.bootstrap import Services, build
from campaigns.rules.clock import MovableClock
from campaigns.rules.intake import EnrollmentRequest
from campaigns.rules.pregnancy import edd_for
from campaigns.rules.vocabulary import Channel, ConsentPurpose, ConsentSource, EddSource
from campaigns.settings import Settings
from campaigns.storage.models import ScheduledMessage

TIMEZONES = ["Europe/London"] * 8 + ["Europe/Warsaw", "America/New_York"]


def requests(count: int, today: datetime, seed: int = 1) -> list[EnrollmentRequest]:
    rng = random.Random(seed)
    made = []
    for i in range(count):
        ga_days = rng.randint(8 * 7, 39 * 7 + 6)
        consents = {ConsentPurpose.PROGRAMME}
        if i % 3 == 0:
            consents.add(ConsentPurpose.MARKETING_SMS)
        made.append(
            EnrollmentRequest(
                campaign="leg-cramps",
                name=f"Patient {i}",
                phone=f"+4474{i:08d}",
                email=f"patient{i}@example.com",
                edd=edd_for(today.date(), 0, ga_days),
                edd_source=EddSource.SCAN,
                timezone=rng.choice(TIMEZONES),
                language="en",
                channels=frozenset(Channel),
                consents=frozenset(consents),
            )
        )
    return made


def enrol_all(
    services: Services, batch: list[EnrollmentRequest], now: datetime, size: int = 10_000
) -> list[float]:
    """Enrol them all through the bulk path, `size` a transaction; each transaction's seconds."""
    per_batch = []
    for start in range(0, len(batch), size):
        t0 = time.perf_counter()
        enrollments.enroll_many(
            services.db,
            services.planner,
            batch[start : start + size],
            now,
            source=ConsentSource.CSV,
            actor="bench",
        )
        per_batch.append(time.perf_counter() - t0)
    return per_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    with fresh_postgres("bench_enrol") as url:
        services = build(Settings(database_url=url), clock=MovableClock(now))
        started = time.perf_counter()
        per_batch = enrol_all(services, requests(args.patients, now), now, args.batch)
        elapsed = time.perf_counter() - started
        with services.db.session() as session:
            rows = session.execute(select(func.count()).select_from(ScheduledMessage)).scalar_one()
        services.close()
    per_batch.sort()
    result = {
        "patients": args.patients,
        "batch": args.batch,
        "seconds": round(elapsed, 2),
        "enrollments_per_second": round(args.patients / elapsed),
        "median_batch_seconds": round(per_batch[len(per_batch) // 2], 3),
        "scheduled_rows": rows,
        "rows_per_second": round(rows / elapsed),
    }
    print(result)
    save("enrol", result)


if __name__ == "__main__":
    main()
