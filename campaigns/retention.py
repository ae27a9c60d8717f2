"""Retention: outbox rows whose story is over are deleted once older than the records policy.

A row is deleted when its status is one nothing moves again (`FINISHED`: sent, delivered,
undelivered, bounced, cancelled, skipped, expired) and it last changed (`updated_at`) more than
`retention_days` ago; its provider events go with it. Rows that can still change (pending,
claimed, sending, unknown, failed) are never touched, however old.

Deleted, not archived (docs/decisions.md, "Retention deletes in batches"): in batches of
`BATCH` rows, one short transaction each, walking the primary key (keyset: each batch starts
after the last id seen, so no row is read twice). On PostgreSQL a batch takes its rows
`FOR UPDATE SKIP LOCKED`: a row some other transaction holds (a late receipt being applied) is
passed over for the next day's run, never waited on. The consent ledger and the audit trail are
not touched: audit rows keep the ids of messages that no longer exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select

from campaigns import audit
from campaigns.rules.vocabulary import FINISHED
from campaigns.storage.db import Database, among
from campaigns.storage.models import ProviderEvent, ScheduledMessage

log = logging.getLogger(__name__)
SYSTEM = "system:retention"
#: Rows deleted per transaction: short enough never to hold locks for long.
BATCH = 1000
_FINISHED = sorted(status.value for status in FINISHED)


@dataclass(frozen=True)
class Pruned:
    """What a run deleted (or, for a dry run, would delete)."""

    cutoff: datetime
    messages: int
    provider_events: int
    batches: int
    dry_run: bool

    def counts(self) -> dict[str, int]:
        return {"messages": self.messages, "provider_events": self.provider_events}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cutoff": self.cutoff.isoformat()}


def cutoff(now: datetime, days: int) -> datetime:
    """Rows last changed before this are past the records policy."""
    return now - timedelta(days=days)


def _expired(before: datetime) -> list[Any]:
    return [ScheduledMessage.status.in_(_FINISHED), ScheduledMessage.updated_at < before]


def prune(
    db: Database,
    now: datetime,
    days: int,
    *,
    batch_size: int = BATCH,
    dry_run: bool = False,
    actor: str = SYSTEM,
) -> Pruned:
    """Delete the outbox rows past the records policy (and their provider events), in batches;
    with `dry_run`, only count them."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    before = cutoff(now, days)
    if dry_run:
        return _count(db, before)
    messages = events = batches = 0
    after = 0
    while True:
        with db.session() as session:
            ids = _take(session.connection(), before, after, batch_size, postgres=db.is_postgres)
            if not ids:
                break
            events += _delete(session.connection(), ProviderEvent.message_id, ids, db.is_postgres)
            messages += _delete(session.connection(), ScheduledMessage.id, ids, db.is_postgres)
        batches += 1
        after = ids[-1]
        if len(ids) < batch_size:
            break
    done = Pruned(before, messages, events, batches, dry_run=False)
    if messages:
        with db.session() as session:
            audit.record(session, now, actor, "retention_deleted", **done.as_dict())
        log.info(
            "retention: %d messages and %d provider events older than %s deleted",
            messages,
            events,
            before.isoformat(),
            extra={"event": "retention.deleted"},
        )
    return done


def _take(
    connection: Any, before: datetime, after: int, limit: int, *, postgres: bool
) -> list[int]:
    """The next batch's ids after `after`, locked; on PostgreSQL rows another transaction
    holds are skipped, not waited on."""
    query = (
        select(ScheduledMessage.id)
        .where(ScheduledMessage.id > after, *_expired(before))
        .order_by(ScheduledMessage.id)
        .limit(limit)
    )
    if postgres:
        query = query.with_for_update(skip_locked=True)
    return [int(i) for i in connection.execute(query).scalars()]


def _delete(connection: Any, column: Any, ids: Sequence[int], postgres: bool) -> int:
    result = connection.execute(delete(column.class_).where(among(column, ids, postgres=postgres)))
    return int(cast(CursorResult[Any], result).rowcount)


def _count(db: Database, before: datetime) -> Pruned:
    expired = select(ScheduledMessage.id).where(*_expired(before))
    with db.session() as session:
        messages = session.execute(
            select(func.count()).select_from(expired.subquery())
        ).scalar_one()
        events = session.execute(
            select(func.count())
            .select_from(ProviderEvent)
            .where(ProviderEvent.message_id.in_(expired))
        ).scalar_one()
    return Pruned(before, int(messages), int(events), 0, dry_run=True)
