"""Thin Celery tasks: each periodic job of campaigns.upkeep is one task, and send_batch sends
what dispatch published."""

from __future__ import annotations

import threading
from collections.abc import Callable

from campaigns import upkeep
from campaigns.bootstrap import Services, build
from campaigns.rules.vocabulary import Channel
from campaigns.settings import get_settings
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


@celery_app.task(name="campaigns.send_batch")  # type: ignore[untyped-decorator]
def send_batch(message_ids: list[int], claim_token: str) -> dict[str, int]:
    outcomes = services().deliverer.send_batch([int(i) for i in message_ids], str(claim_token))
    return {outcome.value: count for outcome, count in outcomes.items()}


def _task(job: upkeep.Job) -> Callable[[], object]:
    def run() -> object:
        return job.run(services(), CeleryQueue())

    run.__name__ = run.__qualname__ = job.name
    return run


#: One task per periodic job, named "campaigns.<job>" (beat's schedule names the same).
PERIODIC = {
    job.name: celery_app.task(name=f"campaigns.{job.name}")(_task(job)) for job in upkeep.JOBS
}
