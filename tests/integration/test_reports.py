"""Reports, on SQLite and PostgreSQL: the daily rollups equal a direct count of random outbox
rows, clicks, replies, opt-outs and enrolments, however the job's runs fall and whatever arrives
late (a property test); the page and its CSV files show the figures, name no patient, are
audited, and are open to every role; a booking-link click is recorded with when its link was
made, and the redirect survives a database that refuses the write."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from campaigns import queries, rollups
from campaigns.bootstrap import Services, build
from campaigns.providers.fake import FakeEmailSender, FakeSmsSender
from campaigns.reports import TABLES
from campaigns.rules import reports as rules
from campaigns.rules.clock import MovableClock
from campaigns.rules.window import zone
from campaigns.storage.db import Database
from campaigns.storage.migrate import upgrade
from campaigns.storage.models import (
    BOOKING_CLICKED,
    Alert,
    AuditEvent,
    ConsentEvent,
    Enrollment,
    InboundMessage,
    Patient,
    ReportDaily,
    ScheduledMessage,
)
from campaigns.web.app import create_app
from tests.conftest import _empty, make_settings
from tests.integration.helpers import enroll
from tests.integration.staff import StaffClient, add_member, sign_in

SM = ScheduledMessage
TZ = "Europe/London"
#: The data's first day: the clocks go forward on 29 March 2026, inside the five days.
FIRST = datetime(2026, 3, 27, 0, 0, tzinfo=UTC)
SPAN_MINUTES = 5 * 24 * 60


class Reporting:
    def __init__(self, services: Services, clock: MovableClock) -> None:
        self.services, self.clock = services, clock

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"Reporting({self.services.db.engine.dialect.name})"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def reporting(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reporting]:
    """One database and one set of services for the module (the data is made per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reports') / 'test.db'}"
        upgrade(url)
    else:
        url = request.getfixturevalue("postgres_url")
    clock = MovableClock(FIRST + timedelta(days=5))
    services = build(
        make_settings(database_url=url, default_timezone=TZ),
        clock=clock,
        sms=FakeSmsSender(),
        email=FakeEmailSender(),
    )
    yield Reporting(services, clock)
    services.close()
    if request.param == "postgres":
        database = Database.from_url(url, pool_size=1)
        _empty(database)
        database.dispose()


def _clear(db: Database) -> None:
    with db.session() as session:
        # The ledger refuses DELETE (append-only): emptied as the suite empties it.
        if db.is_postgres:
            session.execute(text("TRUNCATE consent_events"))
        else:
            guard = session.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'consent_events_no_delete'")
            ).scalar_one()
            session.execute(text("DROP TRIGGER consent_events_no_delete"))
            session.execute(delete(ConsentEvent))
            session.execute(text(guard))
        for model in (ReportDaily, SM, Enrollment, InboundMessage, AuditEvent, Alert, Patient):
            session.execute(delete(model))


# -- random data -------------------------------------------------------------------------------

STEPS = [
    ("welcome", "service"),
    ("clot-warning-signs", "safety"),
    ("broadcast:closed-friday", "education"),
    ("staff_reply:1", "staff_reply"),
    ("staff_reply:2", "staff_reply"),
    ("retired-step", "education"),
]
STATUSES = [
    "pending",
    "sent",
    "delivered",
    "undelivered",
    "bounced",
    "failed",
    "unknown",
    "cancelled",
    "expired",
]
SOURCES = ["form", "csv", "api", "keyword", "link", "provider", "staff"]
INTENTS = ["book", "opt_out", "emergency", "unrecognised", None]
minutes = st.integers(0, SPAN_MINUTES)


@dataclass(frozen=True)
class World:
    enrollments: list[tuple[int, str, int, str]]  # patient, campaign, minute, source
    messages: list[tuple[int, int, str, int, int]]  # enrollment, step, channel, status, minute
    clicks: list[tuple[int, int, int | None]]  # patient, minute, link made minutes before
    replies: list[tuple[int | None, int, int]]  # patient, minute, intent
    opt_outs: list[tuple[int, int, str | None, str]]  # patient, minute, channel, source
    late: list[tuple[int, int]]  # message number, new status: receipts arriving later


worlds = st.builds(
    World,
    enrollments=st.lists(
        st.tuples(
            st.integers(1, 3),
            st.sampled_from(["leg-cramps", "other"]),
            minutes,
            st.sampled_from(SOURCES[:3]),
        ),
        min_size=1,
        max_size=4,
    ),
    messages=st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, len(STEPS) - 1),
            st.sampled_from(["sms", "email"]),
            st.integers(0, len(STATUSES) - 1),
            minutes,
        ),
        max_size=25,
    ),
    clicks=st.lists(
        st.tuples(st.integers(1, 4), minutes, st.one_of(st.none(), st.integers(0, 3000))),
        max_size=6,
    ),
    replies=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(1, 4)), minutes, st.integers(0, 4)), max_size=6
    ),
    opt_outs=st.lists(
        st.tuples(
            st.integers(1, 4),
            minutes,
            st.sampled_from(["sms", "email", None]),
            st.sampled_from(SOURCES),
        ),
        max_size=5,
    ),
    late=st.lists(st.tuples(st.integers(0, 24), st.integers(0, len(STATUSES) - 1)), max_size=6),
)


def _at(minute: int, second: int = 0) -> datetime:
    return FIRST + timedelta(minutes=minute, seconds=second)


def _load(db: Database, world: World) -> None:
    with db.session() as session:
        session.execute(
            insert(Patient),
            [
                {"id": p, "name": f"Patient {p}", "timezone": TZ, "created_at": FIRST}
                for p in range(1, 5)
            ],
        )
        for number, (patient, campaign, minute, source) in enumerate(world.enrollments, 1):
            # A second apart at most once: each enrolment has its own consent instant.
            session.add(_enrollment(number, patient, campaign, _at(minute, 40 + number)))
            session.add(_consent(patient, _at(minute, 40 + number), True, None, source))
        session.flush()
        taken: set[tuple[int, str, str]] = set()
        for number, (which, step, channel, status, minute) in enumerate(world.messages):
            session.add(
                _message(number, world, which, step, channel, STATUSES[status], minute, taken)
            )
        _events(session, world)
        if db.is_postgres:  # rows written with their ids: the sequences move past them
            for table in ("patients", "enrollments", "scheduled_messages"):
                session.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}))"
                    )
                )


def _enrollment(number: int, patient: int, campaign: str, at: datetime) -> Enrollment:
    return Enrollment(
        id=number, patient_id=patient, campaign=campaign, edd=date(2026, 9, 1), edd_source="scan",
        edd_set_at=at, channels="sms,email", status="completed", enrolled_at=at,
        enrolled_on=at.date(), schedule_version=1, skipped=[], updated_at=at,
    )  # fmt: skip


def _consent(patient: int, at: datetime, granted: bool, channel: str | None, source: str) -> Any:
    return ConsentEvent(
        patient_id=patient, purpose="programme", channel=channel, granted=granted,
        occurred_at=at, source=source, wording_version="v1", actor="test",
    )  # fmt: skip


def _message(
    number: int,
    world: World,
    which: int,
    step: int,
    channel: str,
    status: str,
    minute: int,
    taken: set[tuple[int, str, str]],
) -> ScheduledMessage:
    enrollment = which % len(world.enrollments) + 1
    due = _at(minute)
    # Sends a second apart at most once: "the latest message before" is never a tie.
    sent = _at(minute, number + 1) if status in {s.value for s in rules.SENT} else None
    # One row a step and channel of an enrollment (the one-live-row index), whatever the
    # late receipts make of their statuses: a step drawn twice is a retired step's.
    key = STEPS[step][0]
    if (enrollment, key, channel) in taken:
        key = f"{key}~{number}"
    taken.add((enrollment, key, channel))
    return SM(
        id=number + 1, enrollment_id=enrollment, step_key=key, channel=channel,
        kind=STEPS[step][1], schedule_version=1, status=status, due_at=due, next_attempt_at=due,
        attempts=1, sent_at=sent, updated_at=due,
    )  # fmt: skip


def _events(session: Session, world: World) -> None:
    for patient, minute, made in world.clicks:
        detail = {} if made is None else {"issued": _at(max(0, minute - made)).isoformat()}
        session.add(
            AuditEvent(occurred_at=_at(minute, 30), actor="patient:link", action=BOOKING_CLICKED,
                       patient_id=patient, detail=detail)
        )  # fmt: skip
    for number, (who, minute, intent) in enumerate(world.replies):
        session.add(
            InboundMessage(provider="twilio", provider_id=f"SM{number}", sender="+447700900000",
                           patient_id=who, body="x", received_at=_at(minute, 30),
                           intent=INTENTS[intent], matched={}, replies=[], actions=[])
        )  # fmt: skip
    for patient, minute, channel, source in world.opt_outs:
        session.add(_consent(patient, _at(minute, 30), False, channel, source))


# -- the direct count ------------------------------------------------------------------------


def _day(instant: datetime) -> date:
    return instant.astimezone(zone(TZ)).date()


def direct(session: Session) -> Counter[tuple[date, str, str, str, str]]:
    """Every count the rollups should hold, read straight from the tables."""
    found: Counter[tuple[date, str, str, str, str]] = Counter()
    for due, campaign, step, channel, kind, status in session.execute(
        select(SM.due_at, Enrollment.campaign, SM.step_key, SM.channel, SM.kind, SM.status).join(
            Enrollment, Enrollment.id == SM.enrollment_id
        )
    ):
        line, shown = rules.line_of(campaign, step, kind)
        found[_day(due), line, shown, channel, "msg:" + status] += 1
    for at, patient, detail in session.execute(
        select(AuditEvent.occurred_at, AuditEvent.patient_id, AuditEvent.detail)
    ):
        anchor = datetime.fromisoformat(detail["issued"]) if "issued" in detail else at
        found[(_day(at), *_follows(session, patient, anchor, "sms", "sms"), "click")] += 1
    for at, patient, intent in session.execute(
        select(InboundMessage.received_at, InboundMessage.patient_id, InboundMessage.intent)
    ):
        key = _follows(session, patient, at, "sms", "sms")
        found[(_day(at), *key, "reply:" + (intent or "unrecognised"))] += 1
    for at, patient, on, source, granted in session.execute(
        select(ConsentEvent.occurred_at, ConsentEvent.patient_id, ConsentEvent.channel,
               ConsentEvent.source, ConsentEvent.granted)
    ):  # fmt: skip
        if not granted:
            key = _follows(session, patient, at, on, on or "")
            found[(_day(at), *key, "optout:" + rules.route_of(source))] += 1
    for at, campaign, source in session.execute(
        select(Enrollment.enrolled_at, Enrollment.campaign, ConsentEvent.source).join(
            ConsentEvent,
            (ConsentEvent.patient_id == Enrollment.patient_id)
            & (ConsentEvent.occurred_at == Enrollment.enrolled_at)
            & ConsentEvent.granted,
        )
    ):
        found[_day(at), campaign, "", "", "enrol:" + source] += 1
    return found


def _follows(
    session: Session, patient: int | None, at: datetime, channel: str | None, own: str
) -> tuple[str, str, str]:
    """The line, step and channel of the latest message sent to her in the 7 days before."""
    query = (
        select(Enrollment.campaign, SM.step_key, SM.kind, SM.channel)
        .join(Enrollment, Enrollment.id == SM.enrollment_id)
        .where(
            Enrollment.patient_id == patient,
            SM.sent_at <= at,
            SM.sent_at >= at - timedelta(days=7),
        )
        .order_by(SM.sent_at.desc())
        .limit(1)
    )
    if channel is not None:
        query = query.where(SM.channel == channel)
    row = session.execute(query).first() if patient is not None else None
    if row is None:
        return "", "", own
    line, step = rules.line_of(row[0], row[1], row[2])
    return line, step, row[3]


def stored(session: Session) -> Counter[tuple[date, str, str, str, str]]:
    return Counter(
        {
            (r.day, r.campaign, r.step_key, r.channel, r.metric): r.count
            for r in session.execute(select(ReportDaily)).scalars()
            if not r.metric.startswith(rules.STAGE)
        }
    )


def _only(found: Counter[Any], days: set[date]) -> dict[Any, int]:
    return {k: v for k, v in found.items() if k[0] in days and v}


# -- the property ------------------------------------------------------------------------------


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds, first_run=st.integers(0, 4))
def test_the_rollups_equal_a_direct_count(
    reporting: Reporting, world: World, first_run: int
) -> None:
    db = reporting.services.db
    _clear(db)
    _load(db, world)
    # A first run part-way through (the frequent job: its day and the two before) ...
    at = FIRST + timedelta(days=first_run, hours=12)
    rollups.refresh(db, at, TZ)
    window = {_day(at) - timedelta(days=n) for n in range(rollups.RECENT_DAYS)}
    with db.session() as session:
        assert _only(stored(session), window) == _only(direct(session), window)
    # ... then receipts arrive late, and a run repeated changes nothing.
    with db.session() as session:
        for number, status in world.late:
            session.execute(update(SM).where(SM.id == number + 1).values(status=STATUSES[status]))
    end = FIRST + timedelta(days=5)  # the daily job, far enough back for all the data
    rollups.refresh(db, end, TZ, days=7)
    assert rollups.refresh(db, end, TZ, days=7).changed == 0
    with db.session() as session:
        assert stored(session) == +direct(session)


# -- the page and its files ---------------------------------------------------------------------

#: Two enrolments; a delivered welcome text, a failed one, a bounced email and a staff reply;
#: a click on a link made after the welcome, a BOOK reply to it, an email unsubscribe after
#: the bounced email.
SHOWN = World(
    enrollments=[(1, "leg-cramps", 0, "form"), (2, "leg-cramps", 10, "csv")],
    messages=[
        (0, 0, "sms", STATUSES.index("delivered"), 60),
        (1, 0, "sms", STATUSES.index("failed"), 70),
        (0, 1, "email", STATUSES.index("bounced"), 80),
        (1, 3, "sms", STATUSES.index("sent"), 90),
    ],
    clicks=[(1, 120, 30)],
    replies=[(1, 65, INTENTS.index("book"))],
    opt_outs=[(1, 85, "email", "link")],
    late=[],
)


def _alerts(db: Database) -> None:
    with db.session() as session:
        for severity, waited in (("red", 10), ("red", 30), ("amber", None)):
            created = FIRST + timedelta(hours=1)
            session.add(
                Alert(
                    patient_id=1, severity=severity, kind="emergency", created_at=created,
                    acknowledged_at=None if waited is None else created + timedelta(minutes=waited),
                )
            )  # fmt: skip


def _csv(answer: Any, first: int = 0) -> dict[str, list[str]]:
    """The rows of a CSV download, by their first two cells (from `first`)."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(answer.text)))
    return {" / ".join(r[first : first + 2]): r for r in rows[1:]}


@pytest.fixture(scope="module")
def shown(reporting: Reporting) -> Reporting:
    """SHOWN, three alerts, a patient enrolled today, the rollups and the stages made."""
    services, db = reporting.services, reporting.services.db
    _clear(db)
    _load(db, SHOWN)
    _alerts(db)
    reporting.clock.set(FIRST + timedelta(days=5, hours=10))
    enroll(services, weeks=20, name="Zed Quilliam", phone="+447400900123", email="zq@example.com")
    rollups.refresh(db, services.clock.now(), TZ, days=8)
    rollups.snapshot_stages(db, services.clock.now(), TZ)
    return reporting


PERIOD = "from=2026-03-27&to=2026-04-01"


def test_every_role_reads_the_figures_and_no_patient_data(shown: Reporting) -> None:
    services = shown.services
    with TestClient(create_app(services)) as client:
        for role in ("viewer", "clinician", "operator", "admin"):
            member = sign_in(client, services, role)
            page = member.get(f"/staff/reports?{PERIOD}")
            assert page.status_code == 200, role
            assert 'href="/staff/reports"' in page.text  # in the navigation
            assert page.text.count('role="img"') >= 7
            files = {t: member.get(f"/staff/reports.csv?table={t}&{PERIOD}") for t in TABLES}
            member.post("/staff/logout")
    for text_ in [page.text, *(f.text for f in files.values())]:
        for private in ("Zed", "Quilliam", "7400900123", "zq@example", "Patient 1"):
            assert private not in text_
    steps = _csv(files["steps"])
    welcome = steps["Leg care in pregnancy / welcome"]
    # Sent, delivered ... as in reports._FIGURES: 2 welcome texts, one delivered, one failed.
    assert welcome[2:6] == ["1", "1", "0", "1"]
    assert welcome[9:11] == ["1", "1.0000"] and welcome[13] == "1"  # a click (100 %), a reply
    clot = steps["Leg care in pregnancy / clot-warning-signs"]
    assert clot[2:5] == ["1", "0", "1"] and clot[11:13] == ["1", "1.0000"]  # bounced; opt-out
    assert steps["Staff replies / "][2] == "1"
    alerts = _csv(files["alerts"])
    assert alerts["red / 2"][2:] == ["2", "0", "1200", "1680"]  # median 20 min, p90 28 min
    assert alerts["amber / 1"][2:4] == ["0", "1"]
    sources = _csv(files["enrolments"])
    assert sources["Leg care in pregnancy / Staff form"][2] == "1"
    assert sources["Leg care in pregnancy / API"][2] == "1"  # the one enrolled today
    stages = _csv(files["stages"], first=1)
    assert stages["Leg care in pregnancy / Second trimester"] == [
        "2026-04-01", "Leg care in pregnancy", "Second trimester", "1"
    ]  # fmt: skip
    assert stages["Leg care in pregnancy / Finished the programme"][3] == "2"
    assert _csv(files["opt-outs"])["Unsubscribe link / 1"]
    with services.db.session() as session:
        exported = (
            session.execute(select(AuditEvent).where(AuditEvent.action == "report_exported"))
            .scalars()
            .all()
        )
    assert len(exported) == 4 * len(TABLES)
    assert {e.detail["table"] for e in exported} == set(TABLES)


def test_a_wrong_date_is_named_and_the_last_30_days_shown(shown: Reporting) -> None:
    services = shown.services
    with TestClient(create_app(services)) as client:
        add_member(services, "viewer", "viewer2@clinic.example")
        member = StaffClient(client, "viewer2@clinic.example")
        page = member.get("/staff/reports?from=2026-04-31&to=2026-04-01")
        assert page.status_code == 400
        assert "From</a>: &#39;2026-04-31&#39; is not a date" in page.text
        backwards = member.get("/staff/reports?from=2026-04-02&to=2026-04-01")
        assert backwards.status_code == 400 and "is before From" in backwards.text
        assert member.get("/staff/reports?preset=month").status_code == 200
        assert member.get(f"/staff/reports.csv?table=nope&{PERIOD}").status_code == 404


def test_a_booking_click_is_recorded_with_its_link_and_survives_a_failed_write(
    shown: Reporting, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = shown.services
    now = services.clock.now()
    url = services.links.booking_url(1, now - timedelta(hours=2))
    path = "/b/" + url.rsplit("/b/", 1)[1]
    with TestClient(create_app(services), follow_redirects=False) as client:
        assert client.get(path).status_code == 303
        with services.db.session() as session:
            click = session.execute(
                select(AuditEvent)
                .where(AuditEvent.action == BOOKING_CLICKED)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            ).scalar_one()
        made = datetime.fromisoformat(click.detail["issued"])
        assert timedelta(0) <= now - timedelta(hours=2) - made < timedelta(minutes=1)

        def broken(*_: object) -> None:
            raise OperationalError("SELECT", {}, Exception("the database went away"))

        monkeypatch.setattr(queries, "booking_campaign", broken)
        assert client.get(path).status_code == 303
