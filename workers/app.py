"""The Celery application, configured from campaigns settings (docs/architecture.md, "Processes").

Future sends live in the database, never in the broker: beat only fires `dispatch_due`, which
claims due rows and publishes `send_batch` tasks (ids only) after its transaction commits.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from campaigns.settings import Settings, get_settings
from campaigns.upkeep import JOBS
from workers import watchdog

DISPATCH_QUEUE = "dispatch"
SEND_QUEUES = ("send.sms", "send.email")


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every periodic job of campaigns.upkeep, on its period; a run left queued for longer than
    its expiry is dropped (the next one does its work)."""
    return {
        job.name.replace("_", "-"): {
            "task": f"campaigns.{job.name}",
            "schedule": job.every(settings),
            "options": {"expires": job.every(settings) * job.expires_after},
        }
        for job in JOBS
    }


def create_celery(settings: Settings) -> Celery:
    broker = "memory://" if settings.embedded else settings.broker_url
    app = Celery("campaigns", broker=broker, include=["workers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # redelivered; the claim token and attempts cap guard it
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        timezone="UTC",
        enable_utc=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=DISPATCH_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_enable_remote_control=False,
        beat_schedule=beat_schedule(settings),
    )
    return app


celery_app = create_celery(get_settings())
# Beat queues a dispatch every few seconds: a worker quiet for ten of those, with work waiting
# and nothing running, has lost its consumer (see workers.watchdog).
watchdog.install(
    get_settings().broker_url, stuck_after=max(15.0, 10 * get_settings().dispatch_interval_seconds)
)
