"""The shared rate limit never fails a send: it has a connection for every send thread, and a
Redis that cannot be reached degrades it to a limit kept in the process."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from campaigns import ratelimit
from campaigns.ratelimit import RedisRateLimiter, limiter
from tests.integration.processes import free_port, start_redis, stop

pytestmark = pytest.mark.redis


def test_200_send_threads_at_once_all_get_a_slot(tmp_path: Path) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis.log")
    try:
        shared = limiter(100_000, "ratelimit:test", f"redis://127.0.0.1:{port}/0", concurrency=200)
        assert isinstance(shared, RedisRateLimiter)
        start = threading.Barrier(200)
        errors: list[BaseException] = []

        def send() -> None:
            start.wait()
            try:
                shared.acquire()
            except BaseException as exc:  # the old pool raised MaxConnectionsError here
                errors.append(exc)

        threads = [threading.Thread(target=send) for _ in range(200)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert shared.degraded == 0  # every slot came from Redis
    finally:
        stop(server)


def test_a_lost_redis_degrades_to_the_local_limit_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = start_redis(port, tmp_path / "redis.log")
    shared = RedisRateLimiter(
        redis.Redis.from_url(
            f"redis://127.0.0.1:{port}/0", socket_timeout=0.5, socket_connect_timeout=0.5
        ),
        "ratelimit:test",
        100,
        retry_redis_after=0.0,  # ask Redis again on every send: no waiting for a retry time
    )
    shared.acquire()
    stop(server)
    started = time.monotonic()
    for _ in range(21):
        shared.acquire()  # never raises
    # Still limited while Redis is away: 20 intervals of 10 ms at least (a lower bound the
    # limiter's own waits guarantee, however slow the machine).
    assert time.monotonic() - started >= 0.2
    assert shared.degraded >= 20
    assert "Redis unreachable" in caplog.text
    server = start_redis(port, tmp_path / "redis2.log")
    try:
        degraded = shared.degraded
        shared.acquire()
        assert shared.degraded == degraded
        assert "Redis is back" in caplog.text
    finally:
        stop(server)


def test_without_a_rate_there_is_no_limit_and_without_redis_a_local_one() -> None:
    assert isinstance(limiter(0, "k", "redis://127.0.0.1:1/0"), ratelimit.Unlimited)
    assert isinstance(limiter(5, "k", None), ratelimit.LocalRateLimiter)
