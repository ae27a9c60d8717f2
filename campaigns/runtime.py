"""The embedded runtime: beat and worker as one background thread inside `campaigns serve`.

With no broker configured, a claimed batch is handed straight to the Deliverer in this process
(the same send path Celery workers run). Production runs Celery workers and beat instead.
"""

from __future__ import annotations

import logging
import threading
import time

from campaigns import alerts, delivery, housekeeping, reconciling, staff_sessions
from campaigns.bootstrap import Services
from campaigns.scheduling import extend_plans
from campaigns.staff_sessions import Timeouts
from campaigns.vocabulary import Channel

log = logging.getLogger(__name__)
UPKEEP_EVERY_SECONDS = 60.0


class InlineQueue:
    """A SendQueue that sends each batch at once, in this process."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        self.services.deliverer.send_batch(message_ids, claim_token)


def tick(services: Services, queue: delivery.SendQueue) -> int:
    """One dispatch round: email new alerts, then claim what is due and send it."""
    try:
        email_alerts(services)
    except Exception:  # the sweep tries again next tick; sending must not wait on it
        log.exception("emailing alerts failed; trying again next tick")
    return delivery.dispatch_due(services.db, queue, services.clock, services.policy)


def email_alerts(services: Services) -> int:
    settings = services.settings
    return alerts.email_pending(
        services.db,
        services.email,
        settings.alert_email,
        settings.public_url,
        settings.clinic_name,
        services.clock.now(),
    )


def recover(services: Services) -> None:
    """Take back what lost batches left, and settle unknown sends with their providers."""
    now = services.clock.now()
    delivery.reap(services.db, now, services.policy)
    reconciling.reconcile(services.db, services.sms, services.email, now, services.policy)


def upkeep(services: Services) -> None:
    now = services.clock.now()
    extend_plans(services.db, services.planner, now)
    housekeeping.pause_overdue(services.db, now)
    housekeeping.complete_finished(services.db, services.catalog, now)
    staff_sessions.purge_expired(services.db, now, Timeouts.of(services.settings))


class EmbeddedRuntime:
    def __init__(self, services: Services) -> None:
        self.services = services
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
        interval = settings.dispatch_interval_seconds
        last_recover = last_upkeep = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_recover >= settings.upkeep_interval_seconds:
                    recover(self.services)
                    last_recover = time.monotonic()
                if time.monotonic() - last_upkeep >= UPKEEP_EVERY_SECONDS:
                    upkeep(self.services)
                    last_upkeep = time.monotonic()
                tick(self.services, self.queue)
            except Exception:
                log.exception("embedded dispatch tick failed; trying again next tick")
            self._stop.wait(interval)
