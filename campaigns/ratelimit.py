"""Provider rate limits shared by every worker process on every machine.

Each send reserves the next free slot of its provider account (GCRA: a "theoretical arrival
time" that moves on by 1/rate per send) and waits for it. The reservation is one atomic Redis
script using Redis's own clock, so any number of processes together never exceed the rate.
Embedded mode uses the same arithmetic in-process.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis

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


class RateLimiter(Protocol):
    def acquire(self) -> float:
        """Block until this send may go; returns how long it waited (seconds)."""
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
    def __init__(self, client: redis.Redis, key: str, rate: float) -> None:
        self.key, self.interval = key, 1.0 / rate
        self._reserve = client.register_script(_RESERVE)

    def acquire(self) -> float:
        wait = float(self._reserve(keys=[self.key], args=[f"{self.interval:.9f}"]))
        if wait > 0:
            time.sleep(wait)
        return wait


def limiter(rate: float, key: str, redis_url: str | None) -> RateLimiter:
    """The limiter for one provider account: shared through Redis when there is one."""
    if rate <= 0:
        return Unlimited()
    if redis_url:
        return RedisRateLimiter(redis.Redis.from_url(redis_url), key, rate)
    return LocalRateLimiter(rate)
