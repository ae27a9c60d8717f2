"""Celery beat's scheduler, made safe to run twice (docs/decisions.md, "Two beats").

Each entry's period is claimed in PostgreSQL before the task is published
(campaigns.periodic.claim): with two beats running, whichever asks first publishes and the
other skips, so one beat can die or be redeployed without a gap and no job runs twice in a
period. Each tick also leaves beat's heartbeat: in the database every few seconds (readiness,
metrics, the ops page) and as a file's time (the container's healthcheck).

Celery logs every publication at INFO, every two seconds; ours is at DEBUG (INFO is for
something an operator should know happened).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry

from campaigns import heartbeats, metrics, periodic
from campaigns.rules.clock import SystemClock
from campaigns.settings import get_settings
from campaigns.storage.db import Database, Timeouts
from workers import liveness

log = logging.getLogger(__name__)
#: Beat's heartbeat row is written at most this often (a tick can be every few ms).
HEARTBEAT_EVERY_SECONDS = 5.0
#: Claims answer within this, or the period is left to the next tick (beat must not hang).
CLAIM_TIMEOUTS = Timeouts(lock_seconds=2.0, statement_seconds=5.0)


class ClaimingScheduler(PersistentScheduler):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self.db = Database.from_url(settings.database_url, pool_size=2, timeouts=CLAIM_TIMEOUTS)
        self.clock = SystemClock()
        self.who = heartbeats.host()
        self.alive = liveness.File(settings.health_dir, "beat")
        self._last_heartbeat = -1e9
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        delay = float(super().tick(*args, **kwargs))
        self.alive.touch()
        if time.monotonic() - self._last_heartbeat >= HEARTBEAT_EVERY_SECONDS:
            try:
                heartbeats.seen(self.db, heartbeats.Kind.BEAT, ["beat"], self.clock.now(), self.who)
                self._last_heartbeat = time.monotonic()
            except Exception:  # the database is away; the next tick tries again
                log.warning(
                    "beat could not record its heartbeat",
                    exc_info=True,
                    extra={"event": "workers.beat.beat_could_not_record"},
                )
                self._last_heartbeat = time.monotonic()
        return delay

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        period = _period_seconds(entry)
        try:
            mine = periodic.claim(self.db, entry.name, period, self.clock.now(), self.who)
        except Exception:  # no database: the job could not run anyway
            log.warning(
                "beat could not claim %s; skipped this period",
                entry.name,
                exc_info=True,
                extra={"event": "workers.beat.beat_could_not_claim"},
            )
            return
        metrics.BEAT_CLAIMS.labels(entry.name, "claimed" if mine else "taken").inc()
        if not mine:
            log.debug("%s: another beat has this period", entry.name)
            return
        try:
            result = self.apply_async(entry, producer=producer, advance=False)
        except Exception:
            log.exception(
                "beat could not publish %s",
                entry.name,
                extra={"event": "workers.beat.beat_could_not_publish"},
            )
            return
        log.debug("published %s as %s", entry.name, getattr(result, "id", "?"))


def _period_seconds(entry: ScheduleEntry) -> float:
    every = getattr(entry.schedule, "run_every", None)
    if isinstance(every, timedelta):
        return every.total_seconds()
    return 60.0  # a crontab-like entry (we have none): at most once a minute
