"""The message log at 10 million outbox rows, on PostgreSQL.

    .venv/bin/python -m bench.message_log [--rows 10000000] [--patients 200000] [--repeat 7]

Generated in the database (INSERT ... SELECT generate_series; indexes dropped and rebuilt
around the load, as a restore would): one enrollment per patient, her rows interleaved with
everyone else's (as the horizon writes them), three years of due dates, 70 % SMS, and the
status mix of a clinic in its fourth year: the newest 4 % pending, then mostly delivered, with
sent, cancelled, skipped, expired, undelivered, bounced, failed and a few unknown. Measured
through the page's own read (campaigns.message_log.page): the first page and a deep keyset page
(below the middle id) of each filter, the median of `--repeat` runs, and the index PostgreSQL
chose (EXPLAIN).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from sqlalchemy import text

from bench.common import fresh_postgres, save
from campaigns import message_log
from campaigns.storage.db import Database

#: Status by a row's number modulo 10,000, for the rows that are not pending.
MIX = [
    (8_690, "delivered"),
    (300, "sent"),
    (400, "cancelled"),
    (150, "skipped"),
    (50, "expired"),
    (150, "undelivered"),
    (100, "bounced"),
    (150, "failed"),
    (10, "unknown"),
]
START = "2024-01-01 09:00:00+00"
SPAN_SECONDS = 3 * 365 * 86_400


def status_case() -> str:
    arms, upto = [], 0
    for share, status in MIX:
        upto += share
        arms.append(f"WHEN n % 10000 < {upto} THEN '{status}'")
    return "CASE " + " ".join(arms) + " ELSE 'delivered' END"


def load(url: str, rows: int, patients: int) -> dict[str, float]:
    db = Database.from_url(url)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    pending_from = int(rows * 0.96)
    step = SPAN_SECONDS / rows
    with db.engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO patients (id, name, phone, email, timezone, language, discreet,
                                      created_at)
                SELECT p, 'Patient ' || p, '+4474' || lpad(p::text, 8, '0'),
                       'patient' || p || '@example.com', 'Europe/London', 'en', false,
                       CAST(:start AS timestamptz)
                FROM generate_series(1, :patients) AS p
                """
            ),
            {"patients": patients, "start": START},
        )
        connection.execute(
            text(
                """
                INSERT INTO enrollments (id, patient_id, campaign, edd, edd_source, edd_set_at,
                    channels, status, enrolled_at, enrolled_on, schedule_version, skipped,
                    updated_at)
                SELECT p, p, 'leg-cramps', date '2027-06-01', 'scan', CAST(:start AS timestamptz),
                       'sms,email',
                       CASE WHEN p % 50 = 0 THEN 'stopped' WHEN p % 7 = 0 THEN 'completed'
                            ELSE 'active' END,
                       CAST(:start AS timestamptz), date '2024-01-01', 1, '[]',
                       CAST(:start AS timestamptz)
                FROM generate_series(1, :patients) AS p
                """
            ),
            {"patients": patients, "start": START},
        )
        indexes = connection.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = "
                "'scheduled_messages' AND indexname <> 'pk_scheduled_messages'"
            )
        ).all()
        for name, _ in indexes:
            connection.execute(text(f'DROP INDEX "{name}"'))
    timings["patients_s"] = time.perf_counter() - started
    started = time.perf_counter()
    chunk = 1_000_000
    for first in range(1, rows + 1, chunk):
        last = min(rows, first + chunk - 1)
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    f"""
                    INSERT INTO scheduled_messages (id, enrollment_id, step_key, channel, kind,
                        schedule_version, status, reason, due_at, next_attempt_at, attempts,
                        provider, provider_id, error_code, sent_at, delivered_at, updated_at)
                    SELECT n, 1 + n % :patients,
                        'step-' || ((n / :patients + n % :patients) % :rounds),
                        CASE WHEN n % 10 < 7 THEN 'sms' ELSE 'email' END,
                        'education', 1, s.status,
                        CASE s.status WHEN 'failed' THEN 'attempts_exhausted'
                            WHEN 'unknown' THEN 'needs_review'
                            WHEN 'bounced' THEN 'sendgrid_bounce' ELSE NULL END,
                        d.due, d.due,
                        CASE WHEN s.status = 'pending' THEN 0 ELSE 1 END,
                        CASE WHEN s.status IN ('pending', 'cancelled', 'skipped', 'expired')
                             THEN NULL WHEN n % 10 < 7 THEN 'twilio' ELSE 'sendgrid' END,
                        CASE WHEN s.status IN ('delivered', 'sent', 'undelivered', 'bounced')
                             THEN 'PV' || n ELSE NULL END,
                        CASE s.status WHEN 'failed' THEN '30007' WHEN 'undelivered' THEN '30005'
                             ELSE NULL END,
                        CASE WHEN s.status IN ('delivered', 'sent', 'undelivered', 'bounced')
                             THEN d.due ELSE NULL END,
                        CASE WHEN s.status = 'delivered' THEN d.due ELSE NULL END,
                        d.due
                    FROM generate_series(:first, :last) AS n,
                    LATERAL (SELECT CAST(:start AS timestamptz) + make_interval(secs => n * :step)
                             AS due) AS d,
                    LATERAL (SELECT CASE WHEN n >= :pending_from THEN 'pending'
                             ELSE {status_case()} END AS status) AS s
                    """
                ),
                {
                    "patients": patients,
                    "first": first,
                    "last": last,
                    "start": START,
                    "step": step,
                    "pending_from": pending_from,
                    "rounds": -(-rows // patients),
                },
            )
    timings["rows_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with db.engine.begin() as connection:
        for _, definition in indexes:
            connection.execute(text(definition))
        connection.execute(text("SELECT setval('scheduled_messages_id_seq', :n)"), {"n": rows})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE scheduled_messages"))
        connection.execute(text("VACUUM ANALYZE patients"))
        connection.execute(text("VACUUM ANALYZE enrollments"))
    timings["indexes_s"] = time.perf_counter() - started
    db.dispose()
    return timings


def cases(rows: int, patients: int) -> dict[str, dict[str, Any]]:
    middle_day = "2025-07-01"
    return {
        "none": {},
        "status failed": {"statuses": ["failed"]},
        "status failed or unknown": {"statuses": ["failed", "unknown"]},
        "status bounced": {"statuses": ["bounced"]},
        "status pending": {"statuses": ["pending"]},
        "status undelivered or bounced": {"statuses": ["undelivered", "bounced"]},
        "status delivered": {"statuses": ["delivered"]},
        "status cancelled": {"statuses": ["cancelled"]},
        "channel email": {"channel": "email"},
        "provider twilio": {"provider": "twilio"},
        "campaign": {"campaign": "leg-cramps"},
        "step": {"step": "step-7"},
        "due on one day": {"since": middle_day, "until": middle_day},
        "due in one month": {"since": "2025-07-01", "until": "2025-07-31"},
        "provider twilio, delivered": {"provider": "twilio", "statuses": ["delivered"]},
        "failed in one month": {
            "statuses": ["failed"],
            "since": "2025-07-01",
            "until": "2025-07-31",
        },
        "patient by number": {"patient": str(patients // 3)},
        "patient by phone (07 form, spaces)": {
            "patient": "07" + f"4{patients // 3:08d}"[:3] + " " + f"4{patients // 3:08d}"[3:]
        },
        "patient by name": {"patient": f"Patient {patients // 3}"},
    }


def measure(url: str, rows: int, patients: int, repeat: int) -> dict[str, Any]:
    db = Database.from_url(url)
    deep = rows // 2
    results: dict[str, Any] = {}
    for name, raw in cases(rows, patients).items():
        filters = message_log.parse_filters(statuses=raw.pop("statuses", []), **raw)
        found: dict[str, Any] = {}
        for label, before in (("first_page", None), ("deep_page", deep)):
            samples: list[float] = []
            shown = 0
            for _ in range(repeat):
                with db.session() as session:
                    started = time.perf_counter()
                    page = message_log.page(session, filters, before=before, with_patients=True)
                    samples.append(time.perf_counter() - started)
                    shown = len(page.rows)
            found[f"{label}_ms"] = round(statistics.median(samples) * 1000, 2)
            found[f"{label}_rows"] = shown
        found["indexes_first_page"] = plan_indexes(db, filters, None)
        found["indexes_deep_page"] = plan_indexes(db, filters, deep)
        results[name] = found
        print(f"{name:40} {found}", flush=True)
    db.dispose()
    return results


def plan_indexes(db: Database, filters: message_log.Filters, before: int | None) -> list[str]:
    """The indexes PostgreSQL's plan reads for this page of this filter."""
    with db.session() as session:
        query, _ = message_log.statement(session, filters, before=before, with_patients=True)
        if query is None:
            return []
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        plan = session.execute(text(f"EXPLAIN {compiled}")).scalars().all()
    used: list[str] = []
    for line in plan:
        for word in (
            "Index Scan Backward using ",
            "Index Scan using ",
            "Index Only Scan Backward using ",
            "Index Only Scan using ",
            "Bitmap Index Scan on ",
        ):
            if word in line:
                name = line.split(word, 1)[1].split()[0]
                if name not in used:
                    used.append(name)
        if "Seq Scan on " in line:
            used.append("seq scan " + line.split("Seq Scan on ", 1)[1].split()[0])
    return used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with fresh_postgres("bench_message_log") as url:
        timings = load(url, args.rows, args.patients)
        print(f"loaded: {timings}", flush=True)
        results = measure(url, args.rows, args.patients, args.repeat)
    path = save(
        "message_log",
        {
            "rows": args.rows,
            "patients": args.patients,
            "repeat": args.repeat,
            "page_size": message_log.PAGE,
            "deep_page_below_id": args.rows // 2,
            "load": {k: round(v, 1) for k, v in timings.items()},
            "filters": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
