"""A whole campaign paused, resumed or ended for everyone, by staff (audited).

Pausing pauses each active enrollment of the campaign as staff pause one patient's (her
not-yet-sent messages are cancelled under her lock, so nothing goes after the pause
commits); resuming plans each again from now. Ending stops every live enrollment. While a
campaign is paused or ended nobody new is enrolled into it. Each enrollment is its own short
transaction: a campaign with thousands of patients never holds a long lock, and a run that
stops half-way is finished by running it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from campaigns import audit, enrollments
from campaigns.planner import Planner
from campaigns.rules.errors import StateError
from campaigns.rules.vocabulary import EnrollmentStatus
from campaigns.storage.db import Database, insert_if_absent
from campaigns.storage.models import CampaignState, Enrollment

log = logging.getLogger(__name__)

RUNNING, PAUSED, ENDED = (
    enrollments.CAMPAIGN_RUNNING,
    enrollments.CAMPAIGN_PAUSED,
    enrollments.CAMPAIGN_ENDED,
)
PAUSE_REASON, END_REASON = enrollments.CAMPAIGN_PAUSE_REASON, enrollments.CAMPAIGN_END_REASON


@dataclass(frozen=True)
class Changed:
    state: str
    changed: int  # enrollments paused, resumed or ended
    left: int  # enrollments that could not be (e.g. a due date now past: resume by hand)


def states(db: Database) -> dict[str, str]:
    """Campaigns not running, by key: paused or ended."""
    with db.reading() as connection:
        rows = connection.execute(select(CampaignState.campaign, CampaignState.state)).all()
    return {r.campaign: r.state for r in rows if r.state != RUNNING}


def _set(session: Session, campaign: str, state: str, actor: str, note: str, now: datetime) -> str:
    """The new state, locked; returns the old one."""
    insert_if_absent(
        session, CampaignState, campaign=campaign, state=RUNNING, changed_at=now, changed_by=actor
    )
    row = session.get(CampaignState, campaign, with_for_update=True)
    assert row is not None
    before = row.state
    if before == ENDED:
        raise StateError("this campaign has ended; it cannot be paused or resumed")
    row.state, row.changed_at, row.changed_by, row.note = state, now, actor, note.strip() or None
    audit.record(session, now, actor, f"campaign_{state}", campaign=campaign, before=before)
    return before


def _ids(db: Database, campaign: str, statuses: Sequence[str], reason: str | None) -> list[int]:
    with db.reading() as connection:
        query = select(Enrollment.id).where(
            Enrollment.campaign == campaign, Enrollment.status.in_(statuses)
        )
        if reason is not None:
            query = query.where(Enrollment.status_reason == reason)
        return list(connection.execute(query.order_by(Enrollment.id)).scalars())


def _each(
    db: Database,
    campaign: str,
    statuses: Sequence[str],
    reason: str | None,
    act: Callable[[int], object],
) -> tuple[int, int]:
    """Apply `act` to every matching enrollment, then once more to any that appeared while
    the first pass ran (an enrolment committed just before the state change)."""
    done, left, seen = 0, 0, set()
    for _ in range(2):
        for enrollment_id in _ids(db, campaign, statuses, reason):
            if enrollment_id in seen:
                continue
            seen.add(enrollment_id)
            try:
                act(enrollment_id)
                done += 1
            except StateError:
                left += 1  # its state changed under us (stopped, loss): nothing to do
    return done, left


def pause(db: Database, campaign: str, actor: str, note: str, now: datetime) -> Changed:
    with db.session() as session:
        _set(session, campaign, PAUSED, actor, note, now)
    done, left = _each(
        db,
        campaign,
        (EnrollmentStatus.ACTIVE.value,),
        None,
        lambda eid: enrollments.pause(db, eid, now, actor=actor, reason=PAUSE_REASON),
    )
    log.info("campaign paused", extra={"event": "campaign.paused", "enrollments": done})
    return Changed(PAUSED, done, left)


def resume(
    db: Database, planner: Planner, campaign: str, actor: str, note: str, now: datetime
) -> Changed:
    """Resume the enrollments the campaign's pause paused (not those staff paused one by
    one); one whose due date has passed while paused stays paused for staff to decide."""
    with db.session() as session:
        _set(session, campaign, RUNNING, actor, note, now)
    done, left = _each(
        db,
        campaign,
        (EnrollmentStatus.PAUSED.value,),
        PAUSE_REASON,
        lambda eid: enrollments.resume(db, planner, eid, now, actor=actor),
    )
    log.info("campaign resumed", extra={"event": "campaign.resumed", "enrollments": done})
    return Changed(RUNNING, done, left)


def end(db: Database, campaign: str, actor: str, note: str, now: datetime) -> Changed:
    """End the campaign for everyone: every live or held enrollment stops, for good."""
    with db.session() as session:
        _set(session, campaign, ENDED, actor, note, now)
    done, left = _each(
        db,
        campaign,
        enrollments.ENDABLE,
        None,
        lambda eid: enrollments.stop(db, eid, now, actor=actor, reason=END_REASON),
    )
    log.info("campaign ended", extra={"event": "campaign.ended", "enrollments": done})
    return Changed(ENDED, done, left)
