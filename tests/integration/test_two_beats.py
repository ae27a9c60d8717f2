"""Two beats at once on the production shape: no periodic job is published twice in a period,
and when one beat is killed the other carries on without a gap (docs/decisions.md, "Two
beats").

No worker runs, so every publication stays in its Redis queue to be counted: the queue
heartbeat of `send.sms` is due every second, so two unguarded beats would publish about two a
second, and guarded ones at most one per 90% of a second (periodic.EARLY).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from campaigns import heartbeats, periodic
from campaigns.storage.db import Database
from campaigns.storage.models import Heartbeat, PeriodicRun
from tests.conftest import REDIS_URL, _empty
from tests.integration.processes import Spawned, compose_command, env_with, spawn, stop, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
JOB = "heartbeat-send.sms"
QUEUE = "send.sms"
PERIOD = 1.0
#: A database of its own: a worker of another test on the shared one would drain the queue.
BROKER = REDIS_URL.rsplit("/", 1)[0] + "/13"


@pytest.fixture
def env(postgres_url: str) -> Iterator[dict[str, str]]:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    yield env_with(
        CAMPAIGNS_DATABASE_URL=postgres_url,
        CAMPAIGNS_BROKER_URL=BROKER,
        CAMPAIGNS_SMS_PROVIDER="local",
        CAMPAIGNS_EMAIL_PROVIDER="local",
        CAMPAIGNS_HEARTBEAT_SECONDS=str(PERIOD),
    )
    client.flushdb()
    database = Database.from_url(postgres_url, pool_size=1)
    _empty(database)
    database.dispose()


def _beat(env: dict[str, str], tmp_path: Path, name: str) -> Spawned:
    argv = compose_command("beat")
    argv[argv.index("--schedule") + 1] = str(tmp_path / f"{name}-schedule")
    health = {"CAMPAIGNS_HEALTH_DIR": str(tmp_path / name)}
    return spawn(argv, {**env, **health}, tmp_path / f"{name}.log")


def _published(client: redis.Redis) -> int:
    """The queue heartbeats waiting in `send.sms` (each publication is one message)."""
    found = 0
    for raw in client.lrange(QUEUE, 0, -1):
        message = json.loads(raw)
        if message["headers"]["task"] == "campaigns.heartbeat":
            found += 1
    return found


def _runner(database: Database) -> str | None:
    with database.session() as session:
        return session.execute(
            select(PeriodicRun.runner).where(PeriodicRun.name == JOB)
        ).scalar_one_or_none()


def _beats_seen(database: Database) -> set[str]:
    with database.session() as session:
        return set(
            session.execute(
                select(Heartbeat.host).where(Heartbeat.kind == heartbeats.Kind.BEAT.value)
            ).scalars()
        )


def test_two_beats_publish_each_period_once_and_one_survives_the_others_death(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    client = redis.Redis.from_url(BROKER)
    database = Database.from_url(env["CAMPAIGNS_DATABASE_URL"], pool_size=1)
    beats = {"one": _beat(env, tmp_path, "one"), "two": _beat(env, tmp_path, "two")}
    try:
        wait_until(lambda: len(_beats_seen(database)) == 2, 60, "both beats to tick")
        # Both are ticking: count what they publish over at least 8 periods.
        first, started = _published(client), time.monotonic()
        wait_until(lambda: _published(client) >= first + 8, 60, "8 heartbeats to be published")
        count, elapsed = _published(client) - first, time.monotonic() - started
        allowed = elapsed / (PERIOD * (1 - periodic.EARLY)) + 2
        assert count <= allowed, f"{count} publications in {elapsed:.1f} s: published twice"

        # Kill the beat that holds the job's claims; the other takes the next period.
        runner = _runner(database)
        assert runner is not None
        victim = next(n for n, p in beats.items() if runner.endswith(f":{p.pid}"))
        survivor = next(n for n in beats if n != victim)
        os.kill(beats[victim].pid, signal.SIGKILL)
        beats[victim].wait(10)
        killed_at, before = time.monotonic(), _published(client)
        wait_until(lambda: _published(client) >= before + 3, 30, "the surviving beat to publish")
        # Claims older than 90% of a period are taken over at once: no long gap.
        assert time.monotonic() - killed_at < 15
        taken = _runner(database)
        assert taken is not None and taken.endswith(f":{beats[survivor].pid}")
    finally:
        logs = {name: stop(process) for name, process in beats.items()}
        database.dispose()
    assert "Traceback" not in logs[survivor], logs[survivor][-2000:]
