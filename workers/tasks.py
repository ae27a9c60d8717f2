"""Thin Celery tasks: each periodic job of campaigns.upkeep is one task (run at most once a
period and never beside itself: campaigns.periodic), send_batch sends what dispatch published,
and heartbeat says a queue drains."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun, task_prerun

from campaigns import heartbeats, logs, metrics, periodic, upkeep
from campaigns.bootstrap import Services, build
from campaigns.rules.vocabulary import Channel
from campaigns.settings import get_settings
from workers.app import HEARTBEAT_TASK, celery_app

_services: Services | None = None
_lock = threading.Lock()
_context: dict[str, Any] = {}


def services() -> Services:
    """Built lazily in each worker process (after the fork), never shared across processes."""
    global _services  # noqa: PLW0603 - one wiring per process
    with _lock:
        if _services is None:
            _services = build(get_settings())
            metrics.prime({"sms": _services.sms.name, "email": _services.email.name})
        return _services


class CeleryQueue:
    """Publishes claimed batches to the per-channel send queues."""

    def publish(self, channel: Channel, message_ids: list[int], claim_token: str) -> None:
        send_batch.apply_async(args=[message_ids, claim_token], queue=f"send.{channel.value}")


@celery_app.task(name="campaigns.send_batch")  # type: ignore[untyped-decorator]
def send_batch(message_ids: list[int], claim_token: str) -> dict[str, int]:
    outcomes = services().deliverer.send_batch([int(i) for i in message_ids], str(claim_token))
    return {outcome.value: count for outcome, count in outcomes.items()}


@celery_app.task(name=HEARTBEAT_TASK)  # type: ignore[untyped-decorator]
def heartbeat(queue: str) -> None:
    """Taken from `queue` by a worker: the queue drains (beat sends one every period)."""
    built = services()
    heartbeats.seen(built.db, heartbeats.Kind.QUEUE, [queue], built.clock.now(), heartbeats.host())


def _task(job: upkeep.Job) -> Callable[[], object]:
    def run() -> object:
        built = services()
        return periodic.run(
            built.db,
            built.clock,
            job.name,
            lambda: upkeep.run_logged(job, built, CeleryQueue()),
            heartbeats.host(),
        ).result

    run.__name__ = run.__qualname__ = job.name
    return run


#: One task per periodic job, named "campaigns.<job>" (beat's schedule names the same).
PERIODIC = {
    job.name: celery_app.task(name=f"campaigns.{job.name}")(_task(job)) for job in upkeep.JOBS
}


@task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
def _task_started(task_id: str = "", task: Any = None, **_: Any) -> None:
    """Every log line of the task carries its id and name (campaigns.logs)."""
    _context[task_id] = logs.TASK.set((getattr(task, "name", "?"), task_id))


@task_postrun.connect(weak=False)  # type: ignore[untyped-decorator]
def _task_ended(task_id: str = "", **_: Any) -> None:
    token = _context.pop(task_id, None)
    if token is not None:
        logs.TASK.reset(token)
