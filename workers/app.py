"""The Celery application, configured from campaigns settings (docs/architecture.md, "Processes").

Future sends live in the database, never in the broker: beat only fires `dispatch_due`, which
claims due rows and publishes `send_batch` tasks (ids only) after its transaction commits.
Beat also sends a heartbeat task through every worker queue, so whether each queue drains is
known even when nothing is due.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import beat_init, setup_logging, worker_init

from campaigns import heartbeats, logs, metrics
from campaigns.settings import Settings, get_settings
from campaigns.upkeep import JOBS
from workers import watchdog

DISPATCH_QUEUE = "dispatch"
SEND_QUEUES = ("send.sms", "send.email")
HEARTBEAT_TASK = "campaigns.heartbeat"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every periodic job of campaigns.upkeep, on its period, and a heartbeat through each
    worker queue; a run left queued for longer than its expiry is dropped (the next one does
    its work)."""
    schedule = {
        job.name.replace("_", "-"): {
            "task": f"campaigns.{job.name}",
            "schedule": job.every(settings),
            "options": {"expires": job.every(settings) * job.expires_after},
        }
        for job in JOBS
    }
    for queue in heartbeats.QUEUES:
        schedule[f"heartbeat-{queue}"] = {
            "task": HEARTBEAT_TASK,
            "schedule": settings.heartbeat_seconds,
            "args": [queue],
            # A heartbeat waiting behind a long queue is late, not lost: it still says when
            # the queue drained; one older than a few periods says nothing new.
            "options": {"queue": queue, "expires": settings.heartbeat_seconds * 4},
        }
    return schedule


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
        worker_enable_remote_control=settings.celery_monitoring,
        worker_send_task_events=settings.celery_monitoring,
        task_send_sent_event=settings.celery_monitoring,
        worker_hijack_root_logger=False,  # our JSON or text logging (campaigns.logs) stays
        beat_schedule=beat_schedule(settings),
        beat_scheduler="workers.beat:ClaimingScheduler",
    )
    return app


celery_app = create_celery(get_settings())
# Beat queues a dispatch every few seconds: a worker quiet for ten of those, with work waiting
# and nothing running, has lost its consumer (see workers.watchdog).
watchdog.install(
    get_settings().broker_url,
    stuck_after=max(15.0, 10 * get_settings().dispatch_interval_seconds),
    health_dir=get_settings().health_dir,
)


@setup_logging.connect(weak=False)  # type: ignore[untyped-decorator]
def _logging(**_: Any) -> None:
    """Celery leaves logging to us when this signal has a receiver."""
    periodic = frozenset({f"campaigns.{job.name}" for job in JOBS} | {HEARTBEAT_TASK})
    logs.configure(get_settings(), quiet_tasks=periodic)


@worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
@beat_init.connect(weak=False)  # type: ignore[untyped-decorator]
def _metrics(**_: Any) -> None:
    """In the container's first process: the port Prometheus scrapes, summing every pool
    child's counts (multiprocess mode: the image sets PROMETHEUS_MULTIPROC_DIR)."""
    metrics.serve_port(get_settings().metrics_port)
