"""Subject access and erasure (campaigns.subject_rights), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from campaigns import audit, subject_rights
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import NotFoundError
from campaigns.rules.vocabulary import CANCELLABLE, EnrollmentStatus, MessageStatus
from campaigns.runtime import InlineQueue, tick, upkeep_now
from campaigns.storage.models import (
    Alert,
    AuditEvent,
    Base,
    ConsentEvent,
    InboundMessage,
    ProviderEvent,
)
from tests.integration.helpers import enroll_with, fake_email, fake_sms, rows

HER = {
    "name": "Zofia Kowalczyk",
    "phone": "+447400900555",
    "email": "Zofia.K@example.org",
    "clinic_ref": "MRN-77123",
}
HER_TEXT = "Zofia here, I have had bleeding since this morning"
OTHER = {
    "name": "Amara Okafor",
    "phone": "+447400900666",
    "email": "amara.o@example.net",
    "clinic_ref": "MRN-88456",
}


@dataclass(frozen=True)
class Seeded:
    patient_id: int
    enrollment_id: int
    other_id: int
    other_enrollment_id: int


def seed(services: Services) -> Seeded:
    """Her and another patient, each sent what is due, with a text, an alert, a receipt
    and (for her) a stray copy of her email in an audit row's details."""
    her = enroll_with(services, HER, weeks=20)
    other = enroll_with(services, OTHER, weeks=20)
    assert tick(services, InlineQueue(services)) > 0
    now = services.clock.now()
    first_sent = {
        who.enrollment_id: next(r for r in rows(services, who.enrollment_id) if r.status == "sent")
        for who in (her, other)
    }
    with services.db.session() as session:
        for n, (who, details, text) in enumerate(
            ((her, HER, HER_TEXT), (other, OTHER, "Amara: all fine thanks"))
        ):
            inbound = InboundMessage(
                provider="twilio",
                provider_id=f"SMinbound{n}",
                sender=details["phone"],
                patient_id=who.patient_id,
                body=text,
                received_at=now,
                intent="bleeding",
                tier="red",
                matched={"intent": "bleeding", "tier": "red", "matches": [{"words": ["bleeding"]}]},
                replies=[{"template": "emergency", "text": f"{details['name']}, call 999"}],
                actions=["alert"],
            )
            session.add(inbound)
            session.flush()
            session.add(
                Alert(
                    patient_id=who.patient_id,
                    inbound_id=inbound.id,
                    severity="red",
                    kind="bleeding",
                    matched=["bleeding"],
                    detail={"note": f"called back on {details['phone']}"},
                    created_at=now,
                )
            )
            sent = first_sent[who.enrollment_id]
            session.add(
                ProviderEvent(
                    provider="twilio",
                    event_key=f"{sent.provider_id}-delivered",
                    message_id=sent.id,
                    kind="delivered",
                    received_at=now,
                    detail={"To": details["phone"]},
                )
            )
        audit.record(session, now, "staff:1", "note", patient_id=her.patient_id, to=HER["email"])
    return Seeded(her.patient_id, her.enrollment_id, other.patient_id, other.enrollment_id)


def everything(services: Services) -> str:
    """Every value of every column of every table, as one lower-case string."""
    found: list[str] = []
    with services.db.session() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                found.extend(str(value) for value in row)
    return "\n".join(found).lower()


def her_strings() -> list[str]:
    return [
        HER["name"].lower(),
        HER["phone"],
        "07400900555",
        HER["email"].lower(),
        HER["clinic_ref"].lower(),
        "bleeding since this morning",
    ]


def counted(services: Services, model: type[Base]) -> int:
    with services.db.session() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def test_export_holds_her_data_and_nobody_elses(services: Services) -> None:
    seeded = seed(services)
    document = subject_rights.export(
        services.db, seeded.patient_id, services.clock.now(), actor="cli"
    )
    text = json.dumps(document)  # JSON-ready as it is
    assert document["patient"]["name"] == HER["name"]
    assert document["patient"]["phone"] == HER["phone"]
    assert document["patient"]["created_at"].endswith("+00:00")
    assert [e["id"] for e in document["enrollments"]] == [seeded.enrollment_id]
    assert document["messages"] and all(
        m["enrollment_id"] == seeded.enrollment_id for m in document["messages"]
    )
    assert any(m["body"] for m in document["messages"] if m["status"] == "sent")
    assert [i["body"] for i in document["inbound_messages"]] == [HER_TEXT]
    assert len(document["alerts"]) == 1
    assert len(document["provider_events"]) == 1
    assert document["consent_events"]
    assert any(a["action"] == "note" for a in document["audit_events"])
    for value in OTHER.values():
        assert value.lower() not in text.lower()
    with services.db.session() as session:
        [exported] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "subject_access_exported")
        ).scalars()
    assert (exported.actor, exported.patient_id) == ("cli", seeded.patient_id)
    assert HER["phone"] not in json.dumps(exported.detail)


def test_unknown_patients_are_refused(services: Services) -> None:
    with pytest.raises(NotFoundError, match="no patient 999"):
        subject_rights.export(services.db, 999, services.clock.now(), actor="cli")
    with pytest.raises(NotFoundError, match="no patient 999"):
        subject_rights.erase(services.db, 999, services.clock.now(), actor="cli")


def test_erasure_leaves_nothing_of_hers_and_nothing_is_sent_to_her_again(
    services: Services, clock: MovableClock
) -> None:
    seeded = seed(services)
    seeded_values = everything(services)
    assert all(s in seeded_values for s in her_strings() if s != "07400900555")
    ledger, audits = counted(services, ConsentEvent), counted(services, AuditEvent)
    assert any(r.status in CANCELLABLE for r in rows(services, seeded.enrollment_id))

    done = subject_rights.erase(services.db, seeded.patient_id, clock.now(), actor="cli")

    assert done.cancelled > 0 and done.enrollments_ended == 1
    assert sorted(done.suppressed) == ["email", "sms"]
    stored = everything(services)
    for value in her_strings():
        assert value not in stored, value
    # The other patient is untouched.
    assert all(v.lower() in stored for v in OTHER.values())
    assert "amara: all fine thanks" in stored
    # Her messages: none can go, none keeps its text.
    mine = rows(services, seeded.enrollment_id)
    assert not [r for r in mine if r.status in CANCELLABLE or r.status == "sending"]
    assert all(r.body is None and r.subject is None for r in mine)
    with services.db.session() as session:
        assert session.execute(select(ProviderEvent.detail)).scalars().all().count({}) == 1
    # The ledger and audit remain (plus the erasure's own audit row).
    assert counted(services, ConsentEvent) == ledger
    assert counted(services, AuditEvent) == audits + 1
    # The export now shows placeholders.
    document = subject_rights.export(services.db, seeded.patient_id, clock.now(), actor="cli")
    assert document["patient"]["name"] == subject_rights.ERASED
    assert document["patient"]["phone"] is None and document["patient"]["erased_at"]
    assert {e["status"] for e in document["enrollments"]} == {EnrollmentStatus.STOPPED.value}
    for value in her_strings():
        assert value not in json.dumps(document).lower()

    # Weeks later, every tick and upkeep job: nothing more goes to her.
    sent_before = {r.id for r in mine if r.status == MessageStatus.SENT}
    sms, email = len(fake_sms(services).sent), len(fake_email(services).sent)
    for _ in range(4):
        clock.advance(timedelta(days=7))
        upkeep_now(services)
        tick(services, InlineQueue(services))
    after = rows(services, seeded.enrollment_id)
    assert {r.id for r in after if r.status == MessageStatus.SENT} == sent_before
    assert not [r for r in after if r.status in CANCELLABLE]
    new_sends = fake_sms(services).sent[sms:] + fake_email(services).sent[email:]
    assert new_sends, "the other patient's programme goes on"
    assert all(m.to not in (HER["phone"], HER["email"]) for m in new_sends)
    assert all(m.message_id not in {r.id for r in after} for m in new_sends)


def test_erasing_twice_checks_again_and_a_re_enrolment_is_never_messaged(
    services: Services,
) -> None:
    seeded = seed(services)
    subject_rights.erase(services.db, seeded.patient_id, services.clock.now(), actor="cli")
    again = subject_rights.erase(services.db, seeded.patient_id, services.clock.now(), actor="cli")
    assert again.already and again.cancelled == 0 and again.enrollments_ended == 0

    # Enrolled again with the same address: her suppressions keep every send from going.
    back = enroll_with(services, HER, weeks=20)
    sms, email = len(fake_sms(services).sent), len(fake_email(services).sent)
    tick(services, InlineQueue(services))
    new = fake_sms(services).sent[sms:] + fake_email(services).sent[email:]
    assert not [m for m in new if m.to in (HER["phone"], HER["email"])]
    assert not [r for r in rows(services, back.enrollment_id) if r.status == MessageStatus.SENT]
