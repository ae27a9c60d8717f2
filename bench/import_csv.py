"""CSV import at 100,000 rows on PostgreSQL: the check (read, every row checked like the enrol
form, matched against the patients already enrolled) and the import (one transaction through
`enroll_many`, COPY), timed separately, each run on a fresh database.

    .venv/bin/python -m bench.import_csv [--rows 100000] [--runs 3]

The file is what a clinic would export: UK numbers as typed ("07400 123456"), both channels for
a third, UK dates for half the rows, a realistic mix of time zones, one header in staff words.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime

from bench.common import fresh_postgres, save
from campaigns import importing
from campaigns.bootstrap import build
from campaigns.rules.clock import MovableClock
from campaigns.rules.pregnancy import edd_for
from campaigns.settings import Settings

TIMEZONES = ["Europe/London"] * 8 + ["Europe/Warsaw", "America/New_York"]
HEADER = (
    "Full name,Mobile number,Email address,Due date,edd_source,Time zone,channels,consents,"
    "clinic_ref\n"
)
BOTH = '"sms,email"'


def csv_file(rows: int, now: datetime, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    lines = [HEADER]
    for i in range(rows):
        due = edd_for(now.date(), 0, rng.randint(8 * 7, 39 * 7 + 6))
        shown = due.isoformat() if i % 2 else due.strftime("%d/%m/%Y")
        channels = BOTH if i % 3 == 0 else "sms"
        lines.append(
            f'"Patient {i}, Example",07{400000000 + i:09d},patient{i}@example.com,{shown},scan,'
            f"{rng.choice(TIMEZONES)},{channels},programme,R{i}\n"
        )
    return "".join(lines).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    data = csv_file(args.rows, now)
    checks, imports, totals = [], [], []
    for _ in range(args.runs):
        with fresh_postgres("bench_import") as url:
            services = build(Settings(database_url=url), clock=MovableClock(now))
            started = time.perf_counter()
            report = importing.check(services.db, services.intake, data, now)
            checked = time.perf_counter()
            written = importing.enrol(services.db, services.planner, report, now, actor="bench")
            done = time.perf_counter()
            assert report.problems == [], report.problems[:3]
            assert written == args.rows
            services.close()
        checks.append(checked - started)
        imports.append(done - checked)
        totals.append(done - started)
        print(f"check {checks[-1]:.1f} s, import {imports[-1]:.1f} s")
    result = {
        "rows": args.rows,
        "bytes": len(data),
        "runs": args.runs,
        "median_check_seconds": round(statistics.median(checks), 2),
        "median_import_seconds": round(statistics.median(imports), 2),
        "median_total_seconds": round(statistics.median(totals), 2),
        "rows_per_second": round(args.rows / statistics.median(totals)),
        "all_runs": [[round(c, 2), round(i, 2)] for c, i in zip(checks, imports, strict=True)],
    }
    print(result)
    save("import", result)


if __name__ == "__main__":
    main()
