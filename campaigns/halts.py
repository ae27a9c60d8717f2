"""Stopping a channel when the provider account itself is wrong (bad credentials, suspended,
unregistered sender): sending more would fail for every patient, so dispatch skips the channel
until an operator fixes the cause and runs `campaigns resume-channel`."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.rules.vocabulary import Channel
from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import ChannelHalt

log = logging.getLogger(__name__)


def halt(
    db: Database, channel: Channel, provider: str, code: str, reason: str, now: datetime
) -> None:
    with db.session() as session:
        record(session, channel, provider, code, reason, now)


def record(
    session: Session, channel: Channel, provider: str, code: str, reason: str, now: datetime
) -> None:
    """Halt the channel (once) inside the caller's transaction, and raise the alarm."""
    if insert_if_absent(
        session,
        ChannelHalt,
        channel=channel.value,
        provider=provider,
        code=code,
        reason=reason[:300],
        halted_at=now,
    ):
        audit.record(
            session,
            now,
            f"provider:{provider}",
            "channel_halted",
            channel=channel.value,
            code=code,
            reason=reason,
        )
    # The alert: an error in the logs, the metric and the staff dashboard's banner.
    log.error(
        "ALERT: %s channel halted: %s error %s (%s)",
        channel.value,
        provider,
        code,
        reason,
        extra={"event": "halts.channel_halted"},
    )


def halted(db: Database) -> dict[str, ChannelHalt]:
    with db.session() as session:
        return {h.channel: h for h in session.execute(select(ChannelHalt)).scalars()}


def resume(db: Database, channel: Channel, now: datetime, *, actor: str) -> bool:
    with db.session() as session:
        removed = session.execute(
            delete(ChannelHalt)
            .where(ChannelHalt.channel == channel.value)
            .returning(ChannelHalt.channel)
        ).first()
        if removed:
            audit.record(session, now, actor, "channel_resumed", channel=channel.value)
    return removed is not None
