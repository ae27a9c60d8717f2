"""Small builders shared by integration tests."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

from sqlalchemy import select

from campaigns import enrollments
from campaigns.bootstrap import Services
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.rules.intake import parse_enrollment
from campaigns.rules.pregnancy import edd_for
from campaigns.rules.vocabulary import ConsentSource
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage

_counter = iter(range(100, 10_000))


def edd_at(today: date, weeks: int, days: int = 0) -> date:
    """The EDD that puts `today` at weeks+days of gestation."""
    return edd_for(today, weeks, days)


def enroll(
    services: Services, *, weeks: int = 10, days: int = 0, **fields: str | None
) -> enrollments.Enrolled:
    """Enrol one patient at weeks+days of gestation; `fields` override the form's values."""
    return enroll_with(services, fields, weeks=weeks, days=days)


def enroll_with(
    services: Services, fields: Mapping[str, str | None], *, weeks: int = 10, days: int = 0
) -> enrollments.Enrolled:
    """`enroll` with the form's overrides in a mapping (for a field named at run time)."""
    now = services.clock.now()
    values: dict[str, str | None] = {
        "name": "Test Patient",
        "phone": f"+4474000{next(_counter):05d}",
        "email": "patient@example.com",
        "edd": edd_at(now.date(), weeks, days).isoformat(),
        "edd_source": "scan",
        "tz": "Europe/London",
        "channels": "sms,email",
        "consent": "programme",
    }
    values.update(fields)
    request = parse_enrollment(values, services.intake, now)
    [done] = enrollments.enroll_many(
        services.db, services.planner, [request], now, source=ConsentSource.API, actor="test"
    )
    return done


def fake_sms(services: Services) -> FakeSmsSender:
    """The services' SMS sender, which the test built as the fake that records sends."""
    assert isinstance(services.sms, FakeSmsSender)
    return services.sms


def fake_email(services: Services) -> FakeEmailSender:
    """The services' email sender, which the test built as the fake that records sends."""
    assert isinstance(services.email, FakeEmailSender)
    return services.email


def rows(services: Services, enrollment_id: int | None = None) -> list[ScheduledMessage]:
    with services.db.session() as session:
        query = select(ScheduledMessage).order_by(ScheduledMessage.id)
        if enrollment_id is not None:
            query = query.where(ScheduledMessage.enrollment_id == enrollment_id)
        return list(session.execute(query).scalars())


def enrollment(services: Services, enrollment_id: int) -> Enrollment:
    with services.db.session() as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        return found


def phone_of(services: Services, patient_id: int) -> str:
    with services.db.session() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None and patient.phone
        return patient.phone
