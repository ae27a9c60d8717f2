"""Reading a patient's consent ledger and the suppression list, in as few queries as possible."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from campaigns.rules.consent import ConsentRecord, ConsentState, current
from campaigns.rules.contacts import address_hash
from campaigns.rules.vocabulary import Channel, ConsentPurpose
from campaigns.storage.db import among
from campaigns.storage.models import ConsentEvent, Patient, Suppression


def consent_state(session: Session, patient_id: int) -> ConsentState:
    return consent_states(session.connection(), [patient_id])[patient_id]


def consent_states(connection: Connection, patient_ids: Sequence[int]) -> dict[int, ConsentState]:
    """Each patient's consent today, replayed from the ledger in one query."""
    postgres = connection.dialect.name == "postgresql"
    rows: dict[int, list[Any]] = {pid: [] for pid in patient_ids}
    for row in connection.execute(
        select(
            ConsentEvent.patient_id,
            ConsentEvent.purpose,
            ConsentEvent.channel,
            ConsentEvent.granted,
        )
        .where(among(ConsentEvent.patient_id, patient_ids, postgres=postgres))
        .order_by(ConsentEvent.id)
    ):
        rows[row.patient_id].append(row)
    return {pid: state_of(found) for pid, found in rows.items()}


def state_of(rows: Iterable[Any]) -> ConsentState:
    """Today's consent from ledger rows (oldest first) with purpose, channel and granted."""
    return current(
        ConsentRecord(
            ConsentPurpose(r.purpose), Channel(r.channel) if r.channel else None, r.granted
        )
        for r in rows
    )


def suppressed_channels(session: Session, patient: Patient) -> frozenset[Channel]:
    addresses = {Channel.SMS: patient.phone, Channel.EMAIL: patient.email}
    hashes = {address_hash(a): c for c, a in addresses.items() if a}
    found = suppressions(session.connection(), hashes)
    return frozenset(Channel(c) for c, h in found if hashes.get(h) == Channel(c))


def suppressions(connection: Connection, hashes: Collection[str]) -> set[tuple[str, str]]:
    """The (channel, address hash) suppressions among these address hashes, in one query."""
    if not hashes:
        return set()
    postgres = connection.dialect.name == "postgresql"
    found = connection.execute(
        select(Suppression.channel, Suppression.address_hash).where(
            among(Suppression.address_hash, hashes, postgres=postgres)
        )
    )
    return {(channel, hashed) for channel, hashed in found}
