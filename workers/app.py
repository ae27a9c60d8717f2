"""The Celery application, configured from campaigns settings (docs/architecture.md, "Processes").

Future sends live in the database, never in the broker: beat only fires `dispatch_due`, which
claims due rows and publishes `send_batch` tasks (ids only) after its transaction commits.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from campaigns.settings import Settings, get_settings
from workers import watchdog

DISPATCH_QUEUE = "dispatch"
SEND_QUEUES = ("send.sms", "send.email")


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "dispatch-due": {
            "task": "campaigns.dispatch_due",
            "schedule": settings.dispatch_interval_seconds,
            "options": {"expires": settings.dispatch_interval_seconds * 5},
        },
        # RED/AMBER alerts to the clinic's alert address, within seconds of the reply.
        "email-alerts": {
            "task": "campaigns.email_alerts",
            "schedule": settings.dispatch_interval_seconds,
            "options": {"expires": settings.dispatch_interval_seconds * 5},
        },
        # Lost tasks and dead workers are found within seconds, not at the next minute.
        "reap": {
            "task": "campaigns.reap",
            "schedule": settings.upkeep_interval_seconds,
            "options": {"expires": settings.upkeep_interval_seconds * 5},
        },
        "reconcile": {
            "task": "campaigns.reconcile",
            "schedule": settings.upkeep_interval_seconds,
            "options": {"expires": settings.upkeep_interval_seconds * 5},
        },
        "extend-plans": {
            "task": "campaigns.extend_plans",
            "schedule": 3600.0,
            "options": {"expires": 3000},
        },
        "housekeeping": {
            "task": "campaigns.housekeeping",
            "schedule": 600.0,
            "options": {"expires": 1200},
        },
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
