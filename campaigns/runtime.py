"""The embedded runtime: beat and worker as one background thread inside `campaigns serve`.

With no broker configured, a claimed batch is handed straight to the Deliverer in this process
(the same send path Celery workers run), and the periodic jobs of campaigns.upkeep run here on
their periods. Production runs Celery workers and beat instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from campaigns import delivery, heartbeats, periodic, upkeep
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import Channel

log = logging.getLogger(__name__)
#: How often the embedded loop records beat's heartbeat (as workers.beat does).
BEAT_HEARTBEAT_SECONDS = 5.0


class InlineQueue:
    """A SendQueue that sends each batch at once, in this process."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        self.services.deliverer.send_batch(message_ids, claim_token)


def tick(services: Services, queue: delivery.SendQueue) -> int:
    """One dispatch round: email new alerts, then claim what is due and send it."""
    try:
        upkeep.email_alerts(services)
    except Exception:  # the sweep tries again next tick; sending must not wait on it
        log.exception(
            "emailing alerts failed; trying again next tick",
            extra={"event": "runtime.emailing_alerts_failed_trying"},
        )
    return upkeep.dispatch_due(services, queue)


def email_alerts(services: Services) -> int:
    return upkeep.email_alerts(services)


def upkeep_now(services: Services) -> None:
    """Every job but dispatch once, now (tests and the demo's simulated clock)."""
    queue = InlineQueue(services)
    for job in upkeep.JOBS:
        if job.name not in {"dispatch_due", "email_alerts"}:
            job.run(services, queue)


class EmbeddedRuntime:
    def __init__(self, services: Services, jobs: Sequence[upkeep.Job] = upkeep.JOBS) -> None:
        self.services, self.jobs = services, tuple(jobs)
        self.queue = InlineQueue(services)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedded-beat", daemon=True)
        self.who = f"embedded:{heartbeats.host()}"[:128]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        settings = self.services.settings
        last: dict[str, float] = {}
        while not self._stop.is_set():
            self._heartbeats(last)
            for job in self.jobs:
                if time.monotonic() - last.get(job.name, -1e9) < job.every(settings):
                    continue
                try:
                    periodic.run(
                        self.services.db,
                        self.services.clock,
                        job.name,
                        lambda job=job: upkeep.run_logged(job, self.services, self.queue),  # type: ignore[misc]
                        self.who,
                    )
                except Exception:  # one job's failure must not stop the others
                    log.exception(
                        "embedded %s failed; trying again next period",
                        job.name,
                        extra={"event": "job.failed"},
                    )
                last[job.name] = time.monotonic()
            self._stop.wait(settings.dispatch_interval_seconds)

    def _heartbeats(self, last: dict[str, float]) -> None:
        """This loop stands in for beat and for every worker queue: it says so, as they do."""
        due = [
            (kind, names, every)
            for kind, names, every in (
                (heartbeats.Kind.BEAT, ("beat",), BEAT_HEARTBEAT_SECONDS),
                (
                    heartbeats.Kind.QUEUE,
                    heartbeats.QUEUES,
                    self.services.settings.heartbeat_seconds,
                ),
            )
            if time.monotonic() - last.get(kind.value, -1e9) >= every
        ]
        for kind, names, _ in due:
            try:
                heartbeats.seen(self.services.db, kind, names, self.services.clock.now(), self.who)
            except Exception:  # the database is away; the jobs will say so too
                log.warning(
                    "embedded heartbeat failed",
                    exc_info=True,
                    extra={"event": "runtime.embedded_heartbeat_failed"},
                )
            last[kind.value] = time.monotonic()
