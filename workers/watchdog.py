"""A worker that has stopped taking work from its queues ends itself, so it is restarted.

Celery's Redis transport can lose its consumer for good when Redis dies while every pool slot
is busy: the acknowledgements fail ("Couldn't ack"), and after Redis is back the worker never
reads its queues again (celery/celery#10205, #10302; reproduced here with celery 5.7 / kombu
5.7). Nothing is lost (the rows are in the database, and the reaper and reconciler take
back what the worker held), but nothing is sent either, until the worker is restarted.

So the worker's main process watches itself: when its queues hold messages, it has nothing
running or reserved, and it has received nothing for `stuck_after` seconds, it logs why and
shuts down (warm: anything still running finishes). The process supervisor (docker compose's
`restart: unless-stopped`) starts a new one. Beat puts a dispatch task on the queue every few
seconds, so a live worker is never that quiet while its queues are full.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import redis
from celery.signals import task_received, worker_ready
from celery.worker import state

from workers import liveness

log = logging.getLogger(__name__)
#: How often the watchdog looks.
CHECK_EVERY_SECONDS = 2.0


class Watchdog:
    def __init__(
        self, broker_url: str, queues: list[str], stuck_after: float, alive: liveness.File
    ) -> None:
        self.queues, self.stuck_after, self.alive = queues, stuck_after, alive
        self._client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
        self.last_received = time.monotonic()
        self._stop = threading.Event()

    def received(self) -> None:
        self.last_received = time.monotonic()

    def stuck(self) -> bool:
        """Messages wait in our queues, nothing runs here, and nothing arrived for a while."""
        if time.monotonic() - self.last_received < self.stuck_after:
            return False
        if state.active_requests or state.reserved_requests:
            return False
        try:
            waiting = sum(int(self._client.llen(queue)) for queue in self.queues)
        except redis.RedisError:
            return False  # the broker itself is away: the consumer is reconnecting
        return waiting > 0

    def run(self) -> None:
        self.alive.touch()
        while not self._stop.wait(CHECK_EVERY_SECONDS):
            if not self.stuck():
                self.alive.touch()  # the healthcheck's file: this worker takes its work
                continue
            log.critical(
                "worker stopped taking tasks from %s (messages waiting, none received for "
                "%.0f s): shutting down to be restarted",
                ",".join(self.queues),
                time.monotonic() - self.last_received,
                extra={"event": "worker.stuck"},
            )
            os.kill(os.getpid(), signal.SIGTERM)
            return

    def start(self) -> None:
        threading.Thread(target=self.run, name="watchdog", daemon=True).start()


_watchdog: Watchdog | None = None


def install(broker_url: str, stuck_after: float, health_dir: Path) -> None:
    """Connect the watchdog to this worker's start-up and task arrivals (Redis brokers only).
    While it finds the worker well it touches the worker's liveness file (workers.liveness)."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _start(sender: Any = None, **_: Any) -> None:
        global _watchdog  # noqa: PLW0603 - one per worker process
        consumed = sender.app.amqp.queues.consume_from if sender is not None else None
        queues = sorted(queue.name for queue in (consumed or {}).values())
        if not queues:
            return
        _watchdog = Watchdog(broker_url, queues, stuck_after, liveness.File(health_dir, "worker"))
        _watchdog.start()

    @task_received.connect(weak=False)  # type: ignore[untyped-decorator]
    def _received(**_: Any) -> None:
        if _watchdog is not None:
            _watchdog.received()
