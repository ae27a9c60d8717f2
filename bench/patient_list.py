"""The staff patient list at 100,000 patients, on PostgreSQL: the first page and a deep page
(90 % of the way down) for each filter, with the index PostgreSQL used.

    .venv/bin/python -m bench.patient_list [--patients 100000]

Patients are enrolled through the bulk path (`enroll_many`, as bench.enroll), gestational
ages 8+0 to 39+6; then, as a clinic's list would look after a while, some programmes are
stopped (2 %), completed (3 %), ended by a loss (0.5 %), paused (1 %) or on a loss hold
(0.2 %), 0.5 % of the patients have been enrolled again after a stop (two enrollments, listed
once), and 300 alerts are open. A page is 50 rows (campaigns.patient_list.PAGE_SIZE).
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text, update

from bench.common import fresh_postgres, median_ms, save, timed
from bench.enroll import enrol_all, requests
from campaigns import patient_list
from campaigns.bootstrap import build
from campaigns.patient_list import ListFilters
from campaigns.rules.clock import MovableClock
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.settings import Settings
from campaigns.storage.models import Alert, Enrollment

FILTERS: dict[str, ListFilters] = {
    "none": ListFilters(),
    "status=active": ListFilters(status="active"),
    "status=stopped": ListFilters(status="stopped"),
    "status=loss_hold": ListFilters(status="loss_hold"),
    "campaign": ListFilters(campaign="leg-cramps"),
    "trimester=3": ListFilters(trimester="3"),
    "active+trimester=1": ListFilters(status="active", trimester="1"),
    "after_birth": ListFilters(trimester="after_birth"),
    "open_alert": ListFilters(alert=True),
}
SHARES = [
    (EnrollmentStatus.STOPPED, 0.02),
    (EnrollmentStatus.COMPLETED, 0.03),
    (EnrollmentStatus.ENDED_LOSS, 0.005),
    (EnrollmentStatus.PAUSED, 0.01),
    (EnrollmentStatus.LOSS_HOLD, 0.002),
]


def shape(session: Any, patients: int, now: datetime, rng: random.Random) -> None:
    """Statuses, births, re-enrolments and open alerts, as a clinic's list has them."""
    ids = list(range(1, patients + 1))
    rng.shuffle(ids)
    at = 0
    for status, share in SHARES:
        chosen = ids[at : at + int(patients * share)]
        at += len(chosen)
        session.execute(
            update(Enrollment).where(Enrollment.id.in_(chosen)).values(status=status.value)
        )
    # Births recorded for some of those past 38 weeks (after-birth stage).
    session.execute(
        text(
            "UPDATE enrollments SET birth_date = edd WHERE edd <= :soon AND id % 3 = 0"
        ).bindparams(soon=(now + timedelta(days=14)).date())
    )
    # Enrolled again: a second (live) enrollment after the first was stopped.
    again = ids[at : at + patients // 200]
    session.execute(
        update(Enrollment)
        .where(Enrollment.id.in_(again))
        .values(status=EnrollmentStatus.STOPPED.value)
    )
    session.execute(
        text(
            "INSERT INTO enrollments (patient_id, campaign, edd, edd_source, edd_set_at, "
            "channels, status, enrolled_at, enrolled_on, schedule_version, skipped, updated_at) "
            "SELECT patient_id, campaign, edd + 300, edd_source, edd_set_at, channels, 'active', "
            "enrolled_at, enrolled_on, 1, '[]', updated_at FROM enrollments WHERE id = ANY(:ids)"
        ).bindparams(ids=again)
    )
    session.execute(
        insert(Alert),
        [
            {
                "patient_id": rng.randint(1, patients),
                "severity": rng.choice(["red", "amber", "routine", "review"]),
                "kind": "calf_pain",
                "matched": [],
                "detail": {},
                "created_at": now,
                "email_due": False,
            }
            for _ in range(300)
        ],
    )


def indexes_of(plan: Any) -> list[str]:
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            found.append(str(node["Index Name"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return sorted(set(found))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--explain", action="store_true", help="print each deep page's plan")
    args = parser.parse_args()
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    today = now.date()
    rng = random.Random(7)
    with fresh_postgres("bench_patient_list") as url:
        services = build(Settings(database_url=url), clock=MovableClock(now))
        started = time.perf_counter()
        enrol_all(services, requests(args.patients, now), now)
        with services.db.session() as session:
            shape(session, args.patients, now, rng)
        with services.db.engine.connect() as connection:
            connection.execute(text("ANALYZE"))
            connection.commit()
        setup = time.perf_counter() - started
        results: dict[str, Any] = {}
        with services.db.session() as session:
            total = session.execute(select(func.count()).select_from(Enrollment)).scalar_one()
            for name, filters in FILTERS.items():
                ids = [
                    row.id
                    for row in session.execute(
                        patient_list.list_query(filters, today, before=None, limit=None)
                    )
                ]
                deep = ids[int(len(ids) * 0.9)] if len(ids) > 100 else None

                def first(f: ListFilters = filters) -> None:
                    patient_list.patient_page(session, f, today)

                def deeper(f: ListFilters = filters, before: int | None = deep) -> None:
                    patient_list.patient_page(session, f, today, before=before)

                statement = patient_list.list_query(filters, today, before=deep, limit=51)
                compiled = statement.compile(
                    dialect=session.bind.dialect,  # type: ignore[union-attr]
                    compile_kwargs={"literal_binds": True},
                )
                plan = session.execute(
                    text(f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}")
                ).scalar_one()
                if args.explain:
                    explained = session.execute(text(f"EXPLAIN ANALYZE {compiled}")).scalars()
                    print("\n".join(explained))
                results[name] = {
                    "matching": len(ids),
                    "first_page_ms": round(median_ms(timed(first, args.repeat)), 2),
                    "deep_page_ms": (
                        round(median_ms(timed(deeper, args.repeat)), 2) if deep else None
                    ),
                    "deep_page_database_ms": round(plan[0]["Execution Time"], 2),
                    "indexes": indexes_of(plan),
                }
                print(name, results[name])
        services.close()
    result = {
        "patients": args.patients,
        "enrollments": total,
        "setup_seconds": round(setup, 1),
        "page_size": patient_list.PAGE_SIZE,
        "repeat": args.repeat,
        "filters": results,
    }
    save("patient_list", result)


if __name__ == "__main__":
    main()
