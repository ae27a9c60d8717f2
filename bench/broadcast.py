"""A broadcast to 50,000 patients, on PostgreSQL: who gets it, and its outbox rows written.

    .venv/bin/python -m bench.broadcast [--patients 50000] [--repeat 5]

The patients are enrolled first through the bulk path (`enroll_many`, as bench/enroll.py:
both channels, programme consent, a third also offers by text, a realistic mix of time zones
and stages), so each already has her programme's next two weeks in the outbox. Then, each run,
a service notice to everyone by text and email is written as a draft and scheduled for now:
`campaigns.broadcasts.schedule`, one transaction that reads the cohort, each patient's consent
and suppressions, the days her messages already take, places her message (window, one a day)
and writes one row per patient and channel with COPY. Timed: that transaction (the goal: under
30 s); the page's count of who would get it (`audience`, what the broadcast's page shows
before it is sent); the list's counts of its rows; and cancelling it (which also keeps the
next run's patients free of this run's messages). Median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from bench.common import fresh_postgres, save
from bench.enroll import enrol_all, requests
from campaigns import broadcasts
from campaigns.bootstrap import build
from campaigns.rules import broadcasts as rules
from campaigns.rules.clock import MovableClock
from campaigns.settings import Settings
from campaigns.storage.broadcasts import status_counts

ACTOR = "bench"
FORM = {
    "name": "Closed on Friday",
    "purpose": "service",
    "status": ["active"],
    "channels": ["sms", "email"],
    "sms": "The clinic is closed on Friday. Call us on Monday to rebook.",
    "subject": "The clinic is closed on Friday",
    "body": "The clinic is closed on Friday.\n\nCall us on Monday to rebook.",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--patients", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # a Monday morning
    clock = MovableClock(now)
    timings: dict[str, list[float]] = {"schedule": [], "audience": [], "counts": [], "cancel": []}
    written = recipients = 0
    with fresh_postgres("bench_broadcast") as url:
        services = build(Settings(database_url=url), clock=clock)
        enrolled = sum(enrol_all(services, requests(args.patients, now), now))
        sending = broadcasts.Sending(services.window, "Europe/London", args.patients + 1)
        draft = rules.read_form(FORM, campaigns=["leg-cramps"], clinic_short_name="Santi")
        for _ in range(args.repeat):
            clock.advance(timedelta(minutes=1))
            made = broadcasts.create(services.db, draft, clock.now(), actor=ACTOR)
            with services.db.session() as session:
                t0 = time.perf_counter()
                row = broadcasts.one(session, made).broadcast
                found = broadcasts.audience_of(session.connection(), row, sending, clock.now())
                timings["audience"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            done = broadcasts.schedule(services.db, sending, made, None, clock.now(), actor=ACTOR)
            timings["schedule"].append(time.perf_counter() - t0)
            written, recipients = done.messages, done.recipients
            assert found.recipients == recipients
            with services.db.session() as session:
                t0 = time.perf_counter()
                counts = status_counts(session.connection(), [made])
                timings["counts"].append(time.perf_counter() - t0)
            assert sum(counts[made].values()) == written
            t0 = time.perf_counter()
            broadcasts.cancel(services.db, made, clock.now(), actor=ACTOR)
            timings["cancel"].append(time.perf_counter() - t0)
        services.close()
    result = {
        "patients": args.patients,
        "enrol_seconds": round(enrolled, 1),
        "recipients": recipients,
        "rows_written": written,
        "repeat": args.repeat,
        **{
            f"{name}_seconds_median": round(statistics.median(samples), 3)
            for name, samples in timings.items()
        },
        "schedule_seconds_runs": [round(s, 3) for s in timings["schedule"]],
        "rows_per_second": round(written / statistics.median(timings["schedule"])),
    }
    print(result)
    save("broadcast", result)


if __name__ == "__main__":
    main()
