"""Running each periodic job at most once a period, however many beats run.

Two beats may run at once (one can die or be redeployed without a gap), so every periodic
job is guarded twice, both in PostgreSQL (docs/decisions.md, "Two beats"):

1. Beat claims the period before it publishes (`claim`): one UPDATE moves the job's
   `started_at` forward only if the last claim is at least 90% of a period old, timed by
   the database's clock (beats on different hosts need not agree on the time). The other
   beat's attempt finds the period taken and publishes nothing. 10% is slack for a beat's
   own timer jitter, so a lone beat never loses a tick.
2. The worker runs the job under a session advisory lock named for it (`run`): a run still
   going when the next period's starts (an hour's horizon extension at a million patients)
   makes the second one skip, not run beside it. The lock ends with the connection, so a
   killed worker frees it.

Each run's end is recorded: its heartbeat (campaigns.heartbeats), its result and duration
(campaigns.metrics), and on the job's row when it last succeeded or failed, and why.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select, text, update

from campaigns import heartbeats, metrics
from campaigns.rules.clock import Clock
from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import PeriodicRun

log = logging.getLogger(__name__)
T = TypeVar("T")
#: A period may be claimed this early (a fraction of the period): beat's timer jitter.
EARLY = 0.1
#: The advisory locks' first key: ours, apart from any other application's on the database.
LOCK_SPACE = 0x0CA4


def claim(db: Database, name: str, period: float, now: datetime, who: str) -> bool:
    """Take this period of job `name` for one publication; False if another beat has it."""
    gap = timedelta(seconds=period * (1 - EARLY))
    with db.session() as session:
        # The database's clock on PostgreSQL: beats on two hosts compare against one clock.
        at = func.clock_timestamp() if db.is_postgres else now
        if insert_if_absent(session, PeriodicRun, name=name, started_at=now, runner=who):
            return True
        taken = session.execute(
            update(PeriodicRun)
            .where(PeriodicRun.name == name, PeriodicRun.started_at <= at - gap)
            .values(started_at=at, runner=who)
            .returning(PeriodicRun.name)
        ).first()
    return taken is not None


@dataclass(frozen=True)
class Ran:
    result: str  # ok, error, skipped
    value: object = None


@contextmanager
def exclusive(db: Database, name: str) -> Iterator[bool]:
    """Hold job `name`'s advisory lock while the block runs; yields False if another run
    holds it. On SQLite (one embedded process) always True."""
    if not db.is_postgres:
        yield True
        return
    key = zlib.crc32(name.encode()) & 0x7FFFFFFF
    with db.engine.connect() as connection:
        got = bool(connection.execute(select(func.pg_try_advisory_lock(LOCK_SPACE, key))).scalar())
        connection.commit()
        try:
            yield got
        finally:
            if got:
                try:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:s, :k)"), {"s": LOCK_SPACE, "k": key}
                    )
                    connection.commit()
                except Exception:  # a dead connection holds no lock: drop it, not reuse it
                    connection.invalidate()


def run(db: Database, clock: Clock, name: str, work: Callable[[], T], who: str) -> Ran:
    """Run one job's work alone, and record how it went (a failure is re-raised)."""
    with exclusive(db, name) as alone:
        if not alone:
            metrics.JOB_RUNS.labels(name, "skipped").inc()
            log.info(
                "job %s skipped: another run of it is still going",
                name,
                extra={"event": "periodic.job_skipped_another_run"},
            )
            return Ran("skipped")
        started = time.perf_counter()
        try:
            value = work()
        except Exception as exc:
            metrics.JOB_RUNS.labels(name, "error").inc()
            _finished(db, name, clock.now(), who, error=type(exc).__name__)
            raise
        finally:
            metrics.JOB_SECONDS.labels(name).observe(time.perf_counter() - started)
        metrics.JOB_RUNS.labels(name, "ok").inc()
        _finished(db, name, clock.now(), who, error=None)
        return Ran("ok", value)


def _finished(db: Database, name: str, now: datetime, who: str, error: str | None) -> None:
    """The run's end on its row and, if it succeeded, as the job's heartbeat. Never raises:
    a job that did its work is not failed by its bookkeeping."""
    try:
        with db.session() as session:
            insert_if_absent(session, PeriodicRun, name=name, started_at=now, runner=who)
            done = {"finished_at": now}
            if error is None:
                done["succeeded_at"] = now
                heartbeats.record(session, heartbeats.Kind.JOB, [name], now, who)
            session.execute(
                update(PeriodicRun)
                .where(PeriodicRun.name == name)
                .values(
                    **done,
                    **({"failed_at": now, "error": error[:200]} if error is not None else {}),
                )
            )
    except Exception:
        log.warning(
            "recording the end of job %s failed",
            name,
            exc_info=True,
            extra={"event": "periodic.recording_end_job_failed"},
        )
