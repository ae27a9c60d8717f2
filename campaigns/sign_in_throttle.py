"""Failed sign-ins, counted per account and per client address, so passwords cannot be guessed.

Each key (an account, by a hash of the email typed, so unknown emails are counted the same way
and never stored; or a client address) has a window that starts with its first failure. Once
a key has had its limit of failures in the window, signing in with it is refused, without
checking the password, until the window ends. A successful sign-in clears the account's count
(not the address's: one good password must not reset an attacker's budget).

Kept in Redis where there is one (shared by every web process, expiring by itself), in the
database otherwise; if Redis cannot be reached, the database keeps the count meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import delete, select

from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import SignInThrottle

log = logging.getLogger(__name__)
_PREFIX = "campaigns:sign-in:"
#: After Redis failed, the database keeps the counts this long before Redis is tried again.
RETRY_REDIS_AFTER_SECONDS = 10.0


@dataclass(frozen=True)
class Limits:
    account_failures: int
    address_failures: int
    window: timedelta


def account_key(email: str) -> str:
    return "account:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def address_key(address: str) -> str:
    return "address:" + address[:64]


class Counter(Protocol):
    def seconds_locked(self, key: str, limit: int, now: datetime) -> float:
        """How long the key stays locked (0: not locked)."""
        ...

    def failed(self, key: str, window: timedelta, now: datetime) -> int:
        """Count a failure; returns the failures in the key's current window."""
        ...

    def clear(self, key: str) -> None: ...


class DatabaseCounter:
    def __init__(self, db: Database) -> None:
        self.db = db

    def seconds_locked(self, key: str, limit: int, now: datetime) -> float:
        with self.db.session() as session:
            row = session.get(SignInThrottle, key)
            if row is None or row.window_ends_at <= now or row.failures < limit:
                return 0.0
            return (row.window_ends_at - now).total_seconds()

    def failed(self, key: str, window: timedelta, now: datetime) -> int:
        with self.db.session() as session:
            if insert_if_absent(
                session, SignInThrottle, key=key, failures=1, window_ends_at=now + window
            ):
                return 1
            row = session.execute(
                select(SignInThrottle).where(SignInThrottle.key == key).with_for_update()
            ).scalar_one()
            if row.window_ends_at <= now:  # a new window starts with this failure
                row.failures, row.window_ends_at = 1, now + window
            else:
                row.failures += 1
            return row.failures

    def clear(self, key: str) -> None:
        with self.db.session() as session:
            session.execute(delete(SignInThrottle).where(SignInThrottle.key == key))


class RedisCounter:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def seconds_locked(self, key: str, limit: int, now: datetime) -> float:
        pipe = self.client.pipeline()
        pipe.get(_PREFIX + key)
        pipe.pttl(_PREFIX + key)
        count, ttl = pipe.execute()
        if count is None or int(count) < limit or ttl <= 0:
            return 0.0
        return float(ttl) / 1000

    def failed(self, key: str, window: timedelta, now: datetime) -> int:
        pipe = self.client.pipeline()
        pipe.incr(_PREFIX + key)
        pipe.expire(_PREFIX + key, int(window.total_seconds()), nx=True)
        count, _ = pipe.execute()
        return int(count)

    def clear(self, key: str) -> None:
        self.client.delete(_PREFIX + key)


class Throttle:
    """The sign-in page's question ("may this try?") and its record of the answer."""

    def __init__(self, limits: Limits, counter: Counter, fallback: Counter | None = None) -> None:
        self.limits, self.counter, self.fallback = limits, counter, fallback
        self._redis_down_until = 0.0

    def minutes_locked(self, email: str, address: str, now: datetime) -> int:
        """0 when a try may go ahead; otherwise the whole minutes to wait."""
        waits = [
            self._call(
                lambda c: c.seconds_locked(account_key(email), self.limits.account_failures, now)
            ),
            self._call(
                lambda c: c.seconds_locked(address_key(address), self.limits.address_failures, now)
            ),
        ]
        longest = max(waits)
        return math.ceil(longest / 60) if longest > 0 else 0

    def failed(self, email: str, address: str, now: datetime) -> None:
        window = self.limits.window
        self._call(lambda c: c.failed(account_key(email), window, now))
        self._call(lambda c: c.failed(address_key(address), window, now))

    def succeeded(self, email: str) -> None:
        self._call(lambda c: c.clear(account_key(email)))

    def _call(self, work: Callable[[Counter], float | None]) -> float:
        if self.fallback is not None and time.monotonic() < self._redis_down_until:
            return float(work(self.fallback) or 0)
        try:
            return float(work(self.counter) or 0)
        except redis.RedisError as exc:
            if self.fallback is None:
                raise
            # Not asked again for a while: a sign-in must not wait on a dead Redis each time.
            self._redis_down_until = time.monotonic() + RETRY_REDIS_AFTER_SECONDS
            log.warning(
                "sign-in throttle: Redis unreachable (%s); counting in the database",
                type(exc).__name__,
                extra={"event": "sign_in_throttle.sign_throttle_redis_unreachable"},
            )
            return float(work(self.fallback) or 0)


def throttle(db: Database, limits: Limits, redis_url: str | None) -> Throttle:
    database = DatabaseCounter(db)
    if not redis_url:
        return Throttle(limits, database)
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        retry=Retry(NoBackoff(), 0),  # the database is the fallback, not a wait
    )
    return Throttle(limits, RedisCounter(client), fallback=database)
