"""Flower as docker-compose.yml runs it (`celery -A workers.app flower`, on a free port here), on
the real Redis: its healthcheck answers without credentials, everything else needs the basic
auth compose requires, and with Celery monitoring on it sees a worker started with compose's
command, whose own healthcheck (`campaigns health worker`) then passes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.integration.processes import (
    Spawned,
    campaigns,
    compose_command,
    env_with,
    free_port,
    spawn,
    stop,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]
USER = "ops"


@pytest.fixture
def flushed_redis() -> Iterator[None]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield
    client.flushdb()


def flower_env(tmp_path: Path, password: str, **more: str) -> dict[str, str]:
    """What compose gives Flower: the broker, Celery monitoring, basic auth, and the image's
    multiprocess metrics directory."""
    values = {
        "CAMPAIGNS_DATABASE_URL": f"sqlite:///{tmp_path / 'flower.db'}",
        "CAMPAIGNS_BROKER_URL": REDIS_URL,
        "CAMPAIGNS_CELERY_MONITORING": "true",
        "CAMPAIGNS_HEALTH_DIR": str(tmp_path),
        "FLOWER_BASIC_AUTH": f"{USER}:{password}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    return env_with(**(values | more))


def start_flower(env: dict[str, str], tmp_path: Path) -> tuple[str, Spawned]:
    """compose's Flower command, on loopback and a free port instead of 0.0.0.0:5555."""
    port = free_port()
    argv = compose_command("flower")
    argv[argv.index("--port=5555")] = f"--port={port}"
    argv[argv.index("--address=0.0.0.0")] = "--address=127.0.0.1"
    flower = spawn(argv, env, tmp_path / "flower.log")
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert flower.poll() is None, flower.log_path.read_text()
        try:
            return httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, 60, "Flower to answer its healthcheck")
    except BaseException:
        stop(flower)
        raise
    return base, flower


def test_flower_answers_its_healthcheck_and_asks_everyone_else_to_sign_in(
    flushed_redis: None, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(16)
    base, flower = start_flower(flower_env(tmp_path, password), tmp_path)
    try:
        health = httpx.get(f"{base}/healthcheck", timeout=5)
        assert (health.status_code, health.text) == (200, "OK")

        anonymous = httpx.get(f"{base}/", timeout=5)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
        wrong = httpx.get(f"{base}/", auth=(USER, password + "x"), timeout=5)
        assert wrong.status_code == 401
        assert httpx.get(f"{base}/", auth=(USER, password), timeout=5).status_code == 200
    finally:
        log = stop(flower)
    assert password not in log


@pytest.mark.postgres
def test_flower_sees_a_worker_run_as_compose_runs_it(
    flushed_redis: None, postgres_url: str, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(16)
    env = flower_env(tmp_path, password, CAMPAIGNS_DATABASE_URL=postgres_url)
    worker = spawn(compose_command("worker"), env, tmp_path / "worker.log")
    try:
        base, flower = start_flower(env, tmp_path)
        try:

            def listed() -> bool:
                assert worker.poll() is None, worker.log_path.read_text()
                answer = httpx.get(
                    f"{base}/api/workers",
                    params={"refresh": "1"},
                    auth=(USER, password),
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                return any(
                    {q["name"] for q in seen.get("active_queues") or []}
                    >= {"dispatch", "send.sms", "send.email"}
                    for seen in answer.json().values()
                )

            wait_until(listed, 60, "Flower to list the worker and its queues")
        finally:
            stop(flower)

        # The worker's container healthcheck, against the file the worker touches.
        def healthy() -> bool:
            return campaigns("health", "worker", env=env, timeout=30).returncode == 0

        wait_until(healthy, 30, "the worker's healthcheck to pass")
    finally:
        stop(worker)
