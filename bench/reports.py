"""Staff reports at 10 million outbox rows, on PostgreSQL.

    .venv/bin/python -m bench.reports [--rows 10000000] [--patients 200000] [--repeat 7]

The outbox is bench/message_log.py's (three years of sends, a clinic's status mix), with a
year's share of what reports also count, spread over the same three years: replies (one per 100
sends), opt-outs (one per 500), booking-link clicks (one per 300) and alerts (one per 500,
nine in ten acknowledged). Measured: building every day's rollups from nothing (the backfill a
new installation's first deep run would do, day by day), one day's rebuild (the median of
`--repeat` days), the frequent job (3 days) and the daily one (35 days), then `GET
/staff/reports` through the whole app (sign-in cookie, guard, read, template, charts) for a
30-day and a 1-year period, the median of `--repeat` requests each.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from bench.common import fresh_postgres, save
from bench.message_log import load
from campaigns import rollups, staff_accounts
from campaigns.bootstrap import build
from campaigns.rules.clock import MovableClock
from campaigns.settings import Settings
from campaigns.storage.db import Database
from campaigns.web.app import create_app

TZ = "Europe/London"
#: The day the reports are read: near the end of the three years (the newest rows are planned).
TODAY = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
PASSWORD = "a long benchmark password 4 staff"


def load_events(url: str, rows: int, patients: int) -> dict[str, int]:
    """Replies, opt-outs, clicks and alerts over the outbox's three years."""
    counts = {
        "inbound_messages": rows // 100,
        "opt_outs": rows // 500,
        "clicks": rows // 300,
        "alerts": rows // 500,
    }
    span = "make_interval(secs => n * (3 * 365 * 86400.0) / :count)"
    start = "CAST('2024-01-01 09:00:00+00' AS timestamptz)"
    statements = {
        "inbound_messages": f"""
            INSERT INTO inbound_messages (provider, provider_id, sender, patient_id, body,
                received_at, intent, matched, replies, actions)
            SELECT 'twilio', 'SM' || n, '+4474' || lpad((1 + n % :patients)::text, 8, '0'),
                1 + n % :patients, 'x', {start} + {span},
                (ARRAY['book','cramp','help','unrecognised','emergency','opt_out'])[1 + n % 6],
                '{{}}', '[]', '[]'
            FROM generate_series(1, :count) AS n""",
        "opt_outs": f"""
            INSERT INTO consent_events (patient_id, purpose, channel, granted, occurred_at,
                source, wording_version, actor)
            SELECT 1 + n % :patients, 'programme',
                CASE WHEN n % 3 = 0 THEN 'email' ELSE 'sms' END, false, {start} + {span},
                (ARRAY['keyword','keyword','link','provider','staff'])[1 + n % 5], 'v1', 'bench'
            FROM generate_series(1, :count) AS n""",
        "clicks": f"""
            INSERT INTO audit_events (occurred_at, actor, action, patient_id, detail)
            SELECT {start} + {span}, 'patient:link', 'booking_link_clicked', 1 + n % :patients,
                '{{}}'
            FROM generate_series(1, :count) AS n""",
        "alerts": f"""
            INSERT INTO alerts (patient_id, severity, kind, matched, detail, created_at,
                acknowledged_at, email_due)
            SELECT 1 + n % :patients, (ARRAY['red','amber','amber','routine','review'])[1 + n % 5],
                'emergency', '[]', '{{}}', {start} + {span},
                CASE WHEN n % 10 = 0 THEN NULL
                     ELSE {start} + {span} + make_interval(mins => 5 + n % 240) END, false
            FROM generate_series(1, :count) AS n""",
    }
    db = Database.from_url(url)
    with db.engine.begin() as connection:
        for name, statement in statements.items():
            connection.execute(text(statement), {"count": counts[name], "patients": patients})
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("inbound_messages", "consent_events", "audit_events", "alerts"):
            connection.execute(text(f"VACUUM ANALYZE {table}"))
    db.dispose()
    return counts


def roll(url: str, repeat: int) -> dict[str, Any]:
    """Every day's rollups from nothing, then the periodic jobs' own runs, timed."""
    db = Database.from_url(url)
    with db.session() as session:
        first, last = session.execute(
            text("SELECT min(due_at), max(due_at) FROM scheduled_messages")
        ).one()
    days = (last.date() - first.date()).days + 2
    started = time.perf_counter()
    done = rollups.refresh(db, last, TZ, days=days)
    backfill = time.perf_counter() - started
    with db.session() as session:
        stored = session.execute(text("SELECT count(*) FROM report_daily")).scalar_one()
    one_day: list[float] = []
    for n in range(repeat):
        started = time.perf_counter()
        rollups.refresh_day(db, date(2025, 3, 3) + timedelta(days=n * 17), TZ)
        one_day.append(time.perf_counter() - started)
    timings = {}
    for name, span in (("frequent_3_days_s", rollups.RECENT_DAYS), ("daily_35_days_s", 35)):
        started = time.perf_counter()
        rollups.refresh(db, TODAY, TZ, days=span)
        timings[name] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    rollups.snapshot_stages(db, TODAY, TZ)
    timings["stages_s"] = round(time.perf_counter() - started, 2)
    db.dispose()
    return {
        "days": days,
        "backfill_s": round(backfill, 1),
        "rows_written": done.changed,
        "report_daily_rows": stored,
        "one_day_ms": round(statistics.median(one_day) * 1000, 1),
        **timings,
    }


def _settings(url: str) -> Settings:
    return Settings.model_validate(
        {
            "environment": "development",
            "database_url": url,
            "sms_provider": "fake",
            "email_provider": "fake",
            "allowed_hosts": "testserver",
            "default_timezone": TZ,
        }
    )


def render(url: str, repeat: int) -> dict[str, Any]:
    """GET /staff/reports through the whole app, for 30 days and a year, signed in."""
    services = build(_settings(url), clock=MovableClock(TODAY))
    staff_accounts.add(
        services.db, "viewer@clinic.example", "viewer", TODAY, actor="bench", password=PASSWORD
    )
    results: dict[str, Any] = {}
    with TestClient(create_app(services)) as client:
        login = client.get("/staff/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', login)
        assert token is not None
        signed = client.post(
            "/staff/login",
            data={"email": "viewer@clinic.example", "password": PASSWORD, "csrf_token": token[1]},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        end = TODAY.date()
        for name, start in (
            ("30_days", end - timedelta(days=29)),
            ("1_year", end - timedelta(days=364)),
        ):
            path = f"/staff/reports?from={start.isoformat()}&to={end.isoformat()}"
            samples = []
            for _ in range(repeat + 1):  # the first warms the template and the connection
                began = time.perf_counter()
                answer = client.get(path)
                samples.append(time.perf_counter() - began)
                assert answer.status_code == 200, answer.status_code
            results[name] = {
                "median_ms": round(statistics.median(samples[1:]) * 1000, 1),
                "max_ms": round(max(samples[1:]) * 1000, 1),
                "bytes": len(answer.content),
            }
            print(f"{name}: {results[name]}", flush=True)
    services.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with fresh_postgres("bench_reports") as url:
        loaded = {k: round(v, 1) for k, v in load(url, args.rows, args.patients).items()}
        events = load_events(url, args.rows, args.patients)
        print(f"loaded: {loaded} {events}", flush=True)
        rolled = roll(url, args.repeat)
        print(f"rollups: {rolled}", flush=True)
        pages = render(url, args.repeat)
    path = save(
        "reports",
        {
            "rows": args.rows,
            "patients": args.patients,
            "repeat": args.repeat,
            "load": loaded,
            "events": events,
            "rollups": rolled,
            "page": pages,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
