"""The dispatch tick against a large outbox, on PostgreSQL.

    .venv/bin/python -m bench.dispatch [--pending 1000000] [--repeat 15]

Fills scheduled_messages with `pending` rows spread over the next year (the realistic shape:
nearly all waiting for their day) plus 100,000 due now, then measures
- claiming a 5,000-row batch (`claim_due`: one UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
  SKIP LOCKED) RETURNING), `--repeat` times on fresh due rows;
- a full tick when nothing is due (`dispatch_due`, the statement plus its transaction);
and prints the query plans.
"""

from __future__ import annotations

import argparse
import statistics
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text, update

from bench.common import fresh_postgres, median_ms, save, timed
from campaigns.delivery import DeliveryPolicy, claim_due, dispatch_due
from campaigns.rules.clock import MovableClock
from campaigns.rules.vocabulary import Channel
from campaigns.storage.db import Database
from campaigns.storage.models import ScheduledMessage

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
DUE_NOW = 100_000


class NullQueue:
    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        """The broker is not under test here."""


def fill(db: Database, pending: int) -> None:
    with db.session() as session:
        session.execute(
            text("""
            INSERT INTO patients (id, name, timezone, language, discreet, created_at)
            SELECT g, 'P' || g, 'Europe/London', 'en', false, :now
            FROM generate_series(1, :n) g"""),
            {"n": (pending + DUE_NOW) // 10, "now": NOW},
        )
        session.execute(
            text("""
            INSERT INTO enrollments (id, patient_id, campaign, edd, edd_source, edd_set_at,
                channels, status, enrolled_at, enrolled_on, schedule_version, skipped, updated_at)
            SELECT g, g, 'leg-cramps', DATE '2027-05-01', 'scan', :now, 'sms,email', 'active',
                :now, DATE '2026-11-30', 1, '[]', :now
            FROM generate_series(1, :n) g"""),
            {"n": (pending + DUE_NOW) // 10, "now": NOW},
        )
        # Ten rows per enrollment, due at random moments over the next year.
        session.execute(
            text("""
            INSERT INTO scheduled_messages (enrollment_id, step_key, channel, kind,
                schedule_version, status, due_at, next_attempt_at, expires_at, attempts,
                updated_at)
            SELECT 1 + (g - 1) / 10, 'step-' || ((g - 1) % 10), CASE WHEN g % 2 = 0 THEN 'sms'
                ELSE 'email' END, 'education', 1, 'pending', t, t, t + interval '6 days', 0, :now
            FROM generate_series(1, :n) g,
                 LATERAL (SELECT :now + random() * interval '365 days' AS t) due"""),
            {"n": pending + DUE_NOW, "now": NOW},
        )
        session.execute(
            update(ScheduledMessage)
            .where(ScheduledMessage.id <= DUE_NOW)
            .values(next_attempt_at=NOW - timedelta(minutes=5), due_at=NOW - timedelta(minutes=5))
        )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE scheduled_messages"))


def explain(db: Database, now: datetime) -> str:
    due = (
        select(ScheduledMessage.id)
        .where(ScheduledMessage.status == "pending", ScheduledMessage.next_attempt_at <= now)
        .order_by(ScheduledMessage.next_attempt_at)
        .limit(5000)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(ScheduledMessage)
        .where(ScheduledMessage.id.in_(due.scalar_subquery()))
        .values(status="claimed")
        .returning(ScheduledMessage.id)
    )
    compiled = statement.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.engine.connect() as connection:
        plan = connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {compiled}"))
        lines = [row[0] for row in plan]
        connection.rollback()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with fresh_postgres("bench_dispatch") as url:
        db = Database.from_url(url)
        fill(db, args.pending)
        with db.session() as session:
            waiting = session.execute(
                text("SELECT count(*) FROM scheduled_messages WHERE status = 'pending'")
            ).scalar_one()
        plan_due = explain(db, NOW)
        claims = timed(lambda: claim_due(db, NOW, 5000, 100), args.repeat)
        # Nothing due: every due row is claimed (the rest wait for later days).
        with db.session() as session:
            session.execute(
                update(ScheduledMessage)
                .where(
                    ScheduledMessage.status == "pending",
                    ScheduledMessage.next_attempt_at <= NOW,
                )
                .values(status="claimed")
            )
        clock = MovableClock(NOW)
        policy = DeliveryPolicy()
        empty = timed(lambda: dispatch_due(db, NullQueue(), clock, policy), 200)
        plan_empty = explain(db, NOW)
        with db.session() as session:
            left = session.execute(
                text("SELECT count(*) FROM scheduled_messages WHERE status = 'pending'")
            ).scalar_one()
        db.dispose()
    result = {
        "pending_rows_at_start": waiting,
        "pending_rows_when_nothing_due": left,
        "claim_5000_median_ms": round(median_ms(claims), 1),
        "claim_5000_max_ms": round(max(claims) * 1000, 1),
        "empty_tick_median_ms": round(median_ms(empty), 2),
        "empty_tick_p95_ms": round(statistics.quantiles(empty, n=20)[-1] * 1000, 2),
        "explain_claim": plan_due,
        "explain_empty": plan_empty,
    }
    print({k: v for k, v in result.items() if not k.startswith("explain")})
    print("\nClaiming a batch:\n" + plan_due + "\n\nNothing due:\n" + plan_empty)
    save("dispatch", result)


if __name__ == "__main__":
    main()
