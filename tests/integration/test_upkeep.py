"""The periodic jobs are written once: beat's schedule, the Celery tasks and the embedded
runtime all come from campaigns.upkeep.JOBS."""

from __future__ import annotations

import threading

from campaigns import upkeep
from campaigns.bootstrap import Services
from campaigns.delivery import SendQueue
from campaigns.runtime import EmbeddedRuntime
from tests.conftest import make_settings
from tests.integration.helpers import enroll, rows


def test_beat_and_the_workers_run_every_job_on_its_period() -> None:
    from workers.app import beat_schedule, celery_app
    from workers.tasks import PERIODIC

    settings = make_settings(dispatch_interval_seconds=2.0, upkeep_interval_seconds=10.0)
    schedule = beat_schedule(settings)
    assert {entry["task"] for entry in schedule.values()} == {
        f"campaigns.{job.name}" for job in upkeep.JOBS
    } | {"campaigns.heartbeat"}
    # A heartbeat through every worker queue, whether or not anything is due.
    assert {
        entry["options"]["queue"]
        for entry in schedule.values()
        if entry["task"] == "campaigns.heartbeat"
    } == {"dispatch", "send.sms", "send.email"}
    assert celery_app.conf.beat_scheduler == "workers.beat:ClaimingScheduler"
    assert schedule["dispatch-due"]["schedule"] == 2.0
    assert schedule["reap"]["schedule"] == 10.0
    assert schedule["extend-plans"]["schedule"] == 3600.0
    assert schedule["extend-plans"]["options"]["expires"] < 3600.0
    assert schedule["retention"]["schedule"] == 86400.0
    assert schedule["retention"]["options"]["expires"] <= 86400.0 / 2
    for job in upkeep.JOBS:
        assert f"campaigns.{job.name}" in celery_app.tasks
        assert PERIODIC[job.name].name == f"campaigns.{job.name}"


def test_the_embedded_runtime_runs_every_job_and_sends_what_is_due(services: Services) -> None:
    done = enroll(services, weeks=20)
    ran: list[str] = []
    passed = threading.Event()

    def recorded(job: upkeep.Job) -> upkeep.Job:
        def run(services: Services, queue: SendQueue) -> object:
            ran.append(job.name)
            if len(ran) == len(upkeep.JOBS):
                passed.set()
            return job.run(services, queue)

        return upkeep.Job(job.name, job.period, run, job.expires_after)

    runtime = EmbeddedRuntime(services, [recorded(job) for job in upkeep.JOBS])
    runtime.start()
    try:
        assert passed.wait(30), f"only {ran} ran"
    finally:
        runtime.stop()
    assert ran[: len(upkeep.JOBS)] == [job.name for job in upkeep.JOBS]
    assert any(r.status == "sent" for r in rows(services, done.enrollment_id))
