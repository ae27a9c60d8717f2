"""Who was last seen doing their work, for readiness, metrics and the ops page.

Three kinds, each a signal that does not depend on anything being due (a quiet night is not
a dead worker, and a dead worker is not a quiet night):
- `beat`: each beat process's scheduler tick (workers.beat), or the embedded runtime's loop;
- `job`: each periodic job's last successful run (campaigns.periodic);
- `queue`: each worker queue's heartbeat task, which beat publishes to every queue (so the
  queue's age says whether anything drains it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from campaigns.storage.db import Database
from campaigns.storage.models import Heartbeat

#: The worker queues (workers.app routes to them; the embedded runtime plays all three).
QUEUES = ("dispatch", "send.sms", "send.email")


class Kind(StrEnum):
    BEAT = "beat"
    JOB = "job"
    QUEUE = "queue"


def host() -> str:
    """This process, for operators: host name and pid (after any fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def seen(db: Database, kind: Kind, names: Iterable[str], now: datetime, who: str) -> None:
    """Record that `who` did its work for each name now (one upsert per name)."""
    with db.session() as session:
        record(session, kind, names, now, who)


def record(session: Session, kind: Kind, names: Iterable[str], now: datetime, who: str) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for name in names:
        statement = insert(Heartbeat).values(
            kind=kind.value, name=name, host=who, seen_at=now, count=1
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["kind", "name", "host"],
                set_={"seen_at": now, "count": Heartbeat.count + 1},
            )
        )


@dataclass(frozen=True)
class Seen:
    kind: Kind
    name: str
    host: str
    at: datetime
    count: int


def newest(session: Session) -> dict[tuple[Kind, str], datetime]:
    """The newest heartbeat of each (kind, name), whoever gave it."""
    rows = session.execute(
        select(Heartbeat.kind, Heartbeat.name, func.max(Heartbeat.seen_at)).group_by(
            Heartbeat.kind, Heartbeat.name
        )
    ).all()
    return {(Kind(kind), name): at for kind, name, at in rows}


def every(session: Session, since: datetime) -> list[Seen]:
    """Every heartbeat row seen since `since`, newest first (the ops page's table)."""
    rows = session.execute(
        select(Heartbeat)
        .where(Heartbeat.seen_at >= since)
        .order_by(Heartbeat.kind, Heartbeat.name, Heartbeat.seen_at.desc())
    ).scalars()
    return [Seen(Kind(r.kind), r.name, r.host, r.seen_at, r.count) for r in rows]


def prune(db: Database, before: datetime) -> int:
    """Forget processes not seen since `before` (each restart adds a host row)."""
    with db.session() as session:
        gone = session.execute(
            delete(Heartbeat).where(Heartbeat.seen_at < before).returning(Heartbeat.kind)
        ).all()
    return len(gone)
