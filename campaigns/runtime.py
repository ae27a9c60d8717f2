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

from campaigns import delivery, upkeep
from campaigns.bootstrap import Services
from campaigns.rules.vocabulary import Channel

log = logging.getLogger(__name__)


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
        log.exception("emailing alerts failed; trying again next tick")
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

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        settings = self.services.settings
        last: dict[str, float] = {}
        while not self._stop.is_set():
            for job in self.jobs:
                if time.monotonic() - last.get(job.name, -1e9) < job.every(settings):
                    continue
                try:
                    job.run(self.services, self.queue)
                except Exception:  # one job's failure must not stop the others
                    log.exception("embedded %s failed; trying again next period", job.name)
                last[job.name] = time.monotonic()
            self._stop.wait(settings.dispatch_interval_seconds)
