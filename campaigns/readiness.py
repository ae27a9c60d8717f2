"""Whether the whole service can do its work now, for /readyz, `campaigns status` and the ops
page: the database answers, the broker answers, and a beat has ticked lately. Also how long
ago each heartbeat was (beat, each job, each worker queue)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from sqlalchemy import text

from campaigns import heartbeats
from campaigns.bootstrap import Services

#: A broker check answers within this (readiness probes run every few seconds).
BROKER_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Readiness:
    database: str  # "ok" or why not
    broker: str  # "ok", "embedded", or why not
    beat: str  # "ok", or why not
    #: Seconds since each (kind, name) heartbeat, newest of any process.
    ages: dict[tuple[heartbeats.Kind, str], float] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.database == "ok" and self.broker in {"ok", "embedded"} and self.beat == "ok"

    def reasons(self) -> list[str]:
        named = {"database": self.database, "broker": self.broker, "beat": self.beat}
        return [
            f"{part}: {state}" for part, state in named.items() if state not in {"ok", "embedded"}
        ]

    def age(self, kind: heartbeats.Kind, name: str) -> float | None:
        return self.ages.get((kind, name))


def check(services: Services) -> Readiness:
    now = services.clock.now()
    ages: dict[tuple[heartbeats.Kind, str], float] = {}
    try:
        with services.db.session() as session:
            session.execute(text("SELECT 1 FROM scheduled_messages LIMIT 1"))
            seen = heartbeats.newest(session)
        database = "ok"
        ages = {key: max(0.0, (now - at).total_seconds()) for key, at in seen.items()}
    except Exception as exc:  # any failure means not ready; its kind helps the operator
        database = f"unreachable ({type(exc).__name__})"
    return Readiness(database, broker_state(services), beat_state(services, database, ages), ages)


def beat_state(
    services: Services, database: str, ages: dict[tuple[heartbeats.Kind, str], float]
) -> str:
    if database != "ok":
        return "unknown (no database)"
    age = ages.get((heartbeats.Kind.BEAT, "beat"))
    limit = services.settings.beat_silent_seconds
    if age is None:
        return "never ticked"
    if age > limit:
        return f"silent for {age:.0f} s (limit {limit:.0f} s)"
    return "ok"


def broker_state(services: Services) -> str:
    settings = services.settings
    if settings.embedded:
        return "embedded"
    if not settings.broker_url.startswith(("redis://", "rediss://")):
        return "ok"  # another transport: Celery itself reports it
    try:
        client = redis.Redis.from_url(
            settings.broker_url,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def describe_age(seconds: float | None) -> str:
    """ "12 s ago", "3 min ago", "never": for status lines and the ops page."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
