"""The planner: the pure plan (campaigns.rules.planning) for one enrollment, from the facts the
database holds, and what of it becomes outbox rows now (a rolling horizon).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from campaigns.rules.catalog import Catalog
from campaigns.rules.consent import ConsentState, usable_channels
from campaigns.rules.contacts import address_hash
from campaigns.rules.planning import PlanInput, PlannedSend, plan
from campaigns.rules.vocabulary import NOT_SENT_FINAL, Channel, MessageStatus
from campaigns.rules.window import SendWindow, zone
from campaigns.storage.bulk import iso
from campaigns.storage.consents import consent_states, suppressions
from campaigns.storage.models import Enrollment, Patient
from campaigns.storage.plans import sent_histories, write_plans


@dataclass(frozen=True)
class Stored:
    """What one plan puts in the database now."""

    rows: list[PlannedSend]  # pending sends due inside the horizon: outbox rows
    skips: list[PlannedSend]  # recorded on the enrollment, not as rows
    planned_until: datetime | None  # sends due from here on are not rows yet; None: all are


def split(planned: Sequence[PlannedSend], now: datetime, horizon: timedelta) -> Stored:
    """Outbox rows only for the next `horizon`; the rest stays in the (pure, repeatable) plan.

    Writing every future send at enrolment cost 27 rows a patient; a rolling horizon writes
    the few that can be due soon and extends itself (extend_plans) long before they run out.
    """
    end = now + horizon
    rows = [p for p in planned if p.status is MessageStatus.PENDING and p.due_at < end]
    later = any(p.status is MessageStatus.PENDING and p.due_at >= end for p in planned)
    skips = [p for p in planned if p.status is MessageStatus.SKIPPED]
    return Stored(rows, skips, end if later else None)


#: Skips as stored on the enrollment: (version, step, channel, reason, due as ISO 8601).
SkipRecords = tuple[tuple[int, str, str, str | None, str], ...]


def skip_records(skips: Sequence[PlannedSend], version: int) -> SkipRecords:
    return tuple((version, p.step.key, p.channel.value, p.reason, iso(p.due_at)) for p in skips)


def _facts(
    enrollment: Enrollment,
    patient: Patient,
    rows: Sequence[Any],
    consent: ConsentState,
    suppressed: frozenset[Channel],
) -> PlanInput:
    """The plan's input from the patient's outbox rows, consent and suppressions."""
    tz = zone(patient.timezone)
    done: set[tuple[str, Channel]] = set()
    recorded = {(skip[1], Channel(skip[2])) for skip in enrollment.skipped}
    busy: set[date] = set()
    for step, channel, status, due_at, enrollment_id in rows:
        if status in NOT_SENT_FINAL:
            if enrollment_id == enrollment.id and status == MessageStatus.EXPIRED:
                recorded.add((step, Channel(channel)))
            continue
        busy.add(due_at.astimezone(tz).date())
        if enrollment_id == enrollment.id:
            done.add((step, Channel(channel)))
    invalid = frozenset(
        c
        for c, at in (
            (Channel.SMS, patient.phone_invalid_at),
            (Channel.EMAIL, patient.email_invalid_at),
        )
        if at is not None
    )
    channels = usable_channels(
        frozenset(Channel(c) for c in enrollment.channels.split(",")),
        consent,
        suppressed,
        invalid=invalid,
        has_email=patient.email is not None,
    )
    return PlanInput(
        timezone=patient.timezone,
        edd=enrollment.edd,
        enrolled_on=enrollment.enrolled_on,
        channels=channels,
        marketing_channels=consent.marketing,
        birth_date=enrollment.birth_date,
        done=frozenset(done),
        recorded=frozenset(recorded),
        busy_days=frozenset(busy),
    )


@dataclass(frozen=True)
class Planner:
    catalog: Catalog
    window: SendWindow
    horizon: timedelta = timedelta(days=14)

    def pinned(self) -> Planner:
        """This planner over a snapshot of the catalog (Catalog.snapshot)."""
        return replace(self, catalog=self.catalog.snapshot())

    def plan(self, facts: PlanInput, campaign: str, now: datetime) -> list[PlannedSend]:
        return plan(facts, self.catalog[campaign], self.window, now)

    def facts(self, session: Session, enrollment: Enrollment, patient: Patient) -> PlanInput:
        """Everything planning needs, read from the database (sent steps, skips, consent)."""
        return self.facts_of(session, [(enrollment, patient)])[enrollment.id]

    def facts_of(
        self, session: Session, pairs: Sequence[tuple[Enrollment, Patient]]
    ) -> dict[int, PlanInput]:
        """Each enrollment's facts, for many at once in a few queries (by enrollment id)."""
        patient_ids = list({patient.id for _, patient in pairs})
        history = sent_histories(session, patient_ids)
        consents = consent_states(session.connection(), patient_ids)
        addresses = {
            (patient.id, channel): address_hash(address)
            for _, patient in pairs
            for channel, address in ((Channel.SMS, patient.phone), (Channel.EMAIL, patient.email))
            if address
        }
        found = suppressions(session.connection(), set(addresses.values()))
        suppressed = {key for key, hashed in addresses.items() if (key[1].value, hashed) in found}
        return {
            enrollment.id: _facts(
                enrollment,
                patient,
                history[patient.id],
                consents[patient.id],
                frozenset(c for c in Channel if (patient.id, c) in suppressed),
            )
            for enrollment, patient in pairs
        }

    def plan_for(
        self, session: Session, enrollment: Enrollment, patient: Patient, now: datetime
    ) -> list[PlannedSend]:
        """The enrollment's remaining plan as of now (pure given the database state)."""
        return self.plan(self.facts(session, enrollment, patient), enrollment.campaign, now)

    def replan_many(
        self, session: Session, pairs: Sequence[tuple[Enrollment, Patient]], now: datetime
    ) -> int:
        """`replan` for many enrollments at once (the caller holds their patients' locks):
        facts in a few queries, rows in one bulk write. Returns the rows written."""
        facts = self.facts_of(session, pairs)
        plans = []
        pinned = self.pinned()
        for enrollment, _ in pairs:
            planned = pinned.plan(facts[enrollment.id], enrollment.campaign, now)
            stored = split(planned, now, self.horizon)
            plans.append(
                (
                    enrollment.id,
                    enrollment.schedule_version,
                    pinned.catalog.version(enrollment.campaign),
                    stored.rows,
                )
            )
            self._store_skips(enrollment, stored)
        return write_plans(session, plans, now)

    def _store_skips(self, enrollment: Enrollment, stored: Stored) -> None:
        if stored.skips:
            # A new list, so the ORM sees the change to the JSON column.
            enrollment.skipped = [
                *enrollment.skipped,
                *(list(r) for r in skip_records(stored.skips, enrollment.schedule_version)),
            ]
        enrollment.planned_until = stored.planned_until

    def replan(
        self, session: Session, enrollment: Enrollment, patient: Patient, now: datetime
    ) -> list[PlannedSend]:
        """Plan the current schedule version and store it (the caller holds the lock).

        Also how a plan's horizon is extended: sends already written count as done, so only
        what is new is added.
        """
        pinned = self.pinned()
        planned = pinned.plan_for(session, enrollment, patient, now)
        stored = split(planned, now, self.horizon)
        content = pinned.catalog.version(enrollment.campaign)
        write_plans(
            session, [(enrollment.id, enrollment.schedule_version, content, stored.rows)], now
        )
        self._store_skips(enrollment, stored)
        return planned
