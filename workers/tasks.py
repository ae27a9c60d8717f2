"""Thin Celery tasks: each parses its arguments and calls one function of the application."""

from __future__ import annotations

import threading

from campaigns import delivery, housekeeping, reconciling, runtime, scheduling, staff_sessions
from campaigns.bootstrap import Services, build
from campaigns.settings import get_settings
from campaigns.staff_sessions import Timeouts
from campaigns.vocabulary import Channel
from workers.app import celery_app

_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    """Built lazily in each worker process (after the fork), never shared across processes."""
    global _services  # noqa: PLW0603 - one wiring per process
    with _lock:
        if _services is None:
            _services = build(get_settings())
        return _services


class CeleryQueue:
    """Publishes claimed batches to the per-channel send queues."""

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        send_batch.apply_async(args=[message_ids, claim_token], queue=f"send.{channel.value}")


@celery_app.task(name="campaigns.dispatch_due")  # type: ignore[untyped-decorator]
def dispatch_due() -> int:
    s = services()
    return delivery.dispatch_due(s.db, CeleryQueue(), s.clock, s.policy)


@celery_app.task(name="campaigns.send_batch")  # type: ignore[untyped-decorator]
def send_batch(message_ids: list[int], claim_token: str) -> dict[str, int]:
    outcomes = services().deliverer.send_batch([int(i) for i in message_ids], str(claim_token))
    return {outcome.value: count for outcome, count in outcomes.items()}


@celery_app.task(name="campaigns.email_alerts")  # type: ignore[untyped-decorator]
def email_alerts() -> int:
    return runtime.email_alerts(services())


@celery_app.task(name="campaigns.reap")  # type: ignore[untyped-decorator]
def reap() -> dict[str, int]:
    s = services()
    reaped = delivery.reap(s.db, s.clock.now(), s.policy)
    return {"claims": reaped.claims, "released": reaped.released, "unknown": reaped.unknown}


@celery_app.task(name="campaigns.reconcile")  # type: ignore[untyped-decorator]
def reconcile() -> dict[str, int]:
    s = services()
    return dict(reconciling.reconcile(s.db, s.sms, s.email, s.clock.now(), s.policy))


@celery_app.task(name="campaigns.extend_plans")  # type: ignore[untyped-decorator]
def extend_plans() -> int:
    s = services()
    return scheduling.extend_plans(s.db, s.planner, s.clock.now())


@celery_app.task(name="campaigns.housekeeping")  # type: ignore[untyped-decorator]
def run_housekeeping() -> None:
    s = services()
    now = s.clock.now()
    housekeeping.pause_overdue(s.db, now)
    housekeeping.complete_finished(s.db, s.catalog, now)
    staff_sessions.purge_expired(s.db, now, Timeouts.of(s.settings))
