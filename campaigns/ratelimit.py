"""Provider rate limits shared by every worker process on every machine.

Each send reserves the next free slot of its provider account (GCRA: a "theoretical arrival
time" that moves on by 1/rate per send) and waits for it. The reservation is one atomic Redis
script using Redis's own clock, so any number of processes together never exceed the rate.
Embedded mode uses the same arithmetic in-process.

A limiter never fails a send. When Redis cannot be reached it falls back to the same limit
kept in this process (each process then keeps the rate on its own, so several workers together
may exceed it until Redis is back; providers answer that with 429s, which are retried), logs
the outage once and counts the sends it limited locally; it tries Redis again a few seconds
later.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import redis

log = logging.getLogger(__name__)

# KEYS[1]: the account's key; ARGV[1]: seconds per message. Returns seconds to wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%.6f', tat + interval), 'PX', 60000)
return string.format('%.6f', tat - now)
"""
#: After Redis failed, sends use the local limit this long before Redis is tried again.
RETRY_REDIS_AFTER_SECONDS = 5.0
#: A Redis that does not answer within this is treated as down (a send waits no longer).
REDIS_TIMEOUT_SECONDS = 1.0


class RateLimiter(Protocol):
    def acquire(self) -> float:
        """Block until this send may go; returns how long it waited (seconds). Never raises."""
        ...


class Unlimited:
    def acquire(self) -> float:
        return 0.0


class LocalRateLimiter:
    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            time.sleep(wait)
        return wait


class RedisRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        key: str,
        rate: float,
        *,
        retry_redis_after: float = RETRY_REDIS_AFTER_SECONDS,
    ) -> None:
        self.key, self.interval = key, 1.0 / rate
        self.retry_redis_after = retry_redis_after
        self._reserve = client.register_script(_RESERVE)
        self._fallback = LocalRateLimiter(rate)
        self._lock = threading.Lock()
        self._down_until = 0.0
        #: Sends limited in this process because Redis could not be reached (since start).
        self.degraded = 0

    def acquire(self) -> float:
        if time.monotonic() >= self._down_until:
            try:
                wait = float(self._reserve(keys=[self.key], args=[f"{self.interval:.9f}"]))
            except redis.RedisError as exc:
                self._went_down(exc)
            else:
                self._came_back()
                if wait > 0:
                    time.sleep(wait)
                return wait
        with self._lock:
            self.degraded += 1
        return self._fallback.acquire()

    def _went_down(self, exc: redis.RedisError) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + self.retry_redis_after
        if first:
            log.warning(
                "rate limit %s: Redis unreachable (%s); limiting in this process until it is back",
                self.key,
                type(exc).__name__,
                extra={"event": "ratelimit.rate_limit_redis_unreachable"},
            )

    def _came_back(self) -> None:
        if self._down_until == 0.0:
            return
        with self._lock:
            if self._down_until == 0.0:
                return
            self._down_until = 0.0
        log.warning(
            "rate limit %s: Redis is back (%d sends were limited in this process meanwhile)",
            self.key,
            self.degraded,
            extra={"event": "ratelimit.rate_limit_redis_back"},
        )


def limiter(rate: float, key: str, redis_url: str | None, *, concurrency: int = 1) -> RateLimiter:
    """The limiter for one provider account: shared through Redis when there is one.

    The connection pool has room for every send thread of the process (`concurrency`), and
    waits for a free connection instead of failing; every Redis call has a short timeout."""
    if rate <= 0:
        return Unlimited()
    if redis_url:
        pool = redis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=concurrency + 2,
            timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return RedisRateLimiter(redis.Redis(connection_pool=pool), key, rate)
    return LocalRateLimiter(rate)
