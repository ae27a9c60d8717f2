"""`campaigns demo`: the whole programme for five sample patients, on a simulated clock.

It runs on a throwaway SQLite file with the local providers, so it needs no services, and it
goes through the same enrolment, planning, dispatch and send code as production.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import select

from campaigns import housekeeping, queries
from campaigns.bootstrap import Services, build
from campaigns.rules.clock import MovableClock
from campaigns.rules.errors import StateError
from campaigns.rules.intake import parse_enrollment
from campaigns.rules.planning import PlannedSend
from campaigns.rules.pregnancy import date_at_gestation, edd_for, gestational_age
from campaigns.rules.vocabulary import ConsentSource, EddSource, MessageStatus
from campaigns.rules.window import zone
from campaigns.runtime import InlineQueue, tick
from campaigns.scheduling import extend_plans
from campaigns.settings import Settings
from campaigns.storage.migrate import upgrade
from campaigns.storage.models import Enrollment, Patient, ScheduledMessage

Echo = Callable[[str], None]
ACTOR = "demo"


@dataclass(frozen=True)
class DemoPatient:
    name: str
    phone: str  # fictional; demo sends go to the outbox only
    email: str
    timezone: str
    weeks: int  # gestational age at enrolment
    days: int
    edd_source: EddSource
    channels: str
    consent: str
    story: str
    discreet: bool = False


PATIENTS = (
    DemoPatient(
        "Amara Okafor",
        "+447400000101",
        "amara@example.com",
        "Europe/London",
        10,
        0,
        EddSource.SCAN,
        "sms,email",
        "programme,marketing_sms",
        "enrolled early; gives birth at 39+4, recorded two days later",
    ),
    DemoPatient(
        "Beth Lewis",
        "+447400000102",
        "beth@example.com",
        "America/New_York",
        33,
        2,
        EddSource.PATIENT,
        "sms",
        "programme",
        "enrolled late in New York; no birth is ever recorded",
    ),
    DemoPatient(
        "Chloe Evans",
        "+447400000103",
        "chloe@example.com",
        "Europe/London",
        11,
        0,
        EddSource.LMP,
        "sms,email",
        "programme",
        "dated by LMP; her dating scan at 13+3 moves her due date 6 days later; born at 40+2",
        discreet=True,
    ),
    DemoPatient(
        "Dina Shah",
        "+447400000104",
        "dina@example.com",
        "Europe/London",
        30,
        0,
        EddSource.CLINICIAN,
        "sms,email",
        "programme,marketing_email",
        "gives birth at 38+1, recorded the same day",
    ),
    DemoPatient(
        "Esme Novak",
        "+447400000105",
        "esme@example.com",
        "Europe/London",
        16,
        0,
        EddSource.SCAN,
        "sms",
        "programme",
        "pregnancy loss recorded at 19+2",
    ),
)


def _edd_for(patient: DemoPatient, today: date) -> date:
    return edd_for(today, patient.weeks, patient.days)


def seed(services: Services) -> int:
    """Enrol the demo patients (not already there) into the configured database, today."""
    now = services.clock.now()
    with services.db.session() as session:
        known = set(session.execute(select(Patient.phone)).scalars())
    requests = [
        parse_enrollment(
            _fields(p, _edd_for(p, now.astimezone(zone(p.timezone)).date())), services.intake, now
        )
        for p in PATIENTS
        if p.phone not in known
    ]
    services.enrollments.enroll(requests, source=ConsentSource.STAFF, actor=ACTOR)
    return len(requests)


#: The demo's admin account: `make run` prints its password once, so a newcomer signs in.
DEMO_ADMIN = "admin@santi.example"


def seed_admin(services: Services) -> tuple[str, str | None]:
    """The demo admin (email, password), made with a random password if it is not there yet
    (the password is then returned, to be shown once; None when the account already exists).
    Never in production: real accounts are made with `campaigns users add`."""
    from campaigns import staff_accounts
    from campaigns.rules import passwords

    if services.settings.environment == "production":
        raise StateError("no demo admin in production: use `campaigns users add`")
    with services.db.session() as session:
        if staff_accounts.find(session, DEMO_ADMIN) is not None:
            return DEMO_ADMIN, None
    password = passwords.one_time()
    staff_accounts.add(
        services.db,
        DEMO_ADMIN,
        "admin",
        services.clock.now(),
        actor=ACTOR,
        name="Demo admin",
        password=password,
    )
    return DEMO_ADMIN, password


def _fields(p: DemoPatient, edd: date) -> dict[str, str | None]:
    return {
        "name": p.name,
        "phone": p.phone,
        "email": p.email,
        "tz": p.timezone,
        "edd": edd.isoformat(),
        "edd_source": p.edd_source.value,
        "channels": p.channels,
        "consent": p.consent,
        "discreet": "yes" if p.discreet else "",
    }


def simulate(settings: Settings, start_day: date | None, echo: Echo) -> None:
    with tempfile.TemporaryDirectory(prefix="campaigns-demo-") as folder:
        url = f"sqlite:///{Path(folder) / 'demo.db'}"
        upgrade(url)
        demo_settings = settings.model_copy(
            update={
                "database_url": url,
                "sms_provider": "local",
                "email_provider": "local",
                "send_concurrency": 1,
            }
        )
        london = zone("Europe/London")
        first_day = start_day or datetime.now(UTC).astimezone(london).date()
        clock = MovableClock(datetime.combine(first_day, time(8, 30), london).astimezone(UTC))
        services = build(demo_settings, clock=clock)
        try:
            _Simulation(services, clock, echo).run(first_day)
        finally:
            services.close()


class _Simulation:
    def __init__(self, services: Services, clock: MovableClock, echo: Echo) -> None:
        self.services, self.clock, self.echo = services, clock, echo
        self.queue = InlineQueue(services)
        self.enrollment: dict[str, int] = {}
        self.edd: dict[str, date] = {}

    def run(self, first_day: date) -> None:
        self.echo(
            f"Simulating the leg-cramps programme from {first_day:%a %d %b %Y} "
            f"(send window {self.services.settings.send_window}, "
            f"holidays {self.services.settings.holiday_region})."
        )
        for p in PATIENTS:
            self.echo(f"  {p.name}: {p.story}")
        self.echo("")
        self._enroll_all(first_day)
        events = self._events()
        end = self.clock.now() + timedelta(weeks=60)
        while True:
            candidates = [t for t in (_next_due(self.services), self._next_midnight()) if t]
            if events:
                candidates.append(events[0][0])
            upcoming = min(candidates)
            if upcoming > end:
                break
            if upcoming > self.clock.now():
                self.clock.set(upcoming)
            while events and events[0][0] <= self.clock.now():
                events.pop(0)[1]()
            extend_plans(self.services.db, self.services.planner, self.clock.now())
            tick(self.services, self.queue)
            _show_sent(self.services, self.clock.now(), self.echo)
            self._housekeeping()
            if not events and _next_due(self.services) is None and _all_ended(self.services):
                break
        _summary(self.services, self.enrollment, self.clock.now(), self.echo)

    def _enroll_all(self, first_day: date) -> None:
        now = self.clock.now()
        for p in PATIENTS:
            edd = _edd_for(p, now.astimezone(zone(p.timezone)).date())
            request = parse_enrollment(_fields(p, edd), self.services.intake, now)
            [done] = self.services.enrollments.enroll(
                [request], source=ConsentSource.STAFF, actor=ACTOR
            )
            self.enrollment[p.name], self.edd[p.name] = done.enrollment_id, edd
            self.echo(
                f"{_when(now.astimezone(zone(p.timezone)))}  {p.name.split()[0]:<6} "
                f"ENROLLED at {p.weeks}+{p.days}, due {edd:%d %b %Y} "
                f"({p.edd_source.value}), {p.channels}, {p.timezone}"
            )
            self._explain(p.name, done.planned)

    def _explain(self, name: str, planned: list[PlannedSend]) -> None:
        first = name.split(maxsplit=1)[0]
        skipped: dict[str, list[str]] = {}
        for p in planned:
            if p.status is MessageStatus.SKIPPED:
                skipped.setdefault(str(p.reason), []).append(f"{p.step.key}/{p.channel}")
            elif p.reason == "catch_up":
                self.echo(
                    f"{'':<22}{first:<6} CATCH-UP {p.step.key} ({p.channel}) goes soon: "
                    f"a warning-signs step missed before enrolment"
                )
        for reason, steps in skipped.items():
            self.echo(f"{'':<22}{first:<6} SKIPPED ({reason}): {', '.join(steps)}")
        pending = sum(1 for p in planned if p.status is MessageStatus.PENDING)
        self.echo(f"{'':<22}{first:<6} {pending} sends planned")

    def _events(self) -> list[tuple[datetime, Callable[[], None]]]:
        def at(name: str, weeks: int, days: int, hour: int) -> datetime:
            day = date_at_gestation(self.edd[name], weeks, days)
            tz = zone(next(p.timezone for p in PATIENTS if p.name == name))
            return datetime.combine(day, time(hour, 30), tz).astimezone(UTC)

        amara_birth = date_at_gestation(self.edd["Amara Okafor"], 39, 4)
        dina_birth = date_at_gestation(self.edd["Dina Shah"], 38, 1)
        new_chloe = self.edd["Chloe Evans"] + timedelta(days=6)
        chloe_birth = date_at_gestation(new_chloe, 40, 2)
        events = [
            (at("Chloe Evans", 13, 3, 11), lambda: self._change_edd("Chloe Evans", new_chloe)),
            (at("Esme Novak", 19, 2, 15), lambda: self._loss("Esme Novak")),
            (at("Dina Shah", 38, 1, 18), lambda: self._birth("Dina Shah", dina_birth)),
            (at("Amara Okafor", 39, 6, 10), lambda: self._birth("Amara Okafor", amara_birth)),
            (
                datetime.combine(chloe_birth, time(16), zone("Europe/London")).astimezone(UTC),
                lambda: self._birth("Chloe Evans", chloe_birth),
            ),
        ]
        return sorted(events, key=lambda e: e[0])

    def _change_edd(self, name: str, edd: date) -> None:
        self._event(name, f"DUE DATE CHANGED after the scan: {self.edd[name]:%d %b} -> {edd:%d %b}")
        planned = self.services.enrollments.change_edd(
            self.enrollment[name], edd, EddSource.SCAN, actor=ACTOR
        )
        self.edd[name] = edd
        self._cancelled(name)
        self._explain(name, planned)

    def _birth(self, name: str, born: date) -> None:
        self._event(name, f"BIRTH recorded (born {born:%a %d %b})")
        planned = self.services.enrollments.record_birth(self.enrollment[name], born, actor=ACTOR)
        self._cancelled(name)
        self._explain(name, planned)

    def _loss(self, name: str) -> None:
        self._event(name, "PREGNANCY LOSS recorded: everything stops now, for good")
        self.services.enrollments.record_loss(self.enrollment[name], actor=ACTOR)
        self._cancelled(name)

    def _event(self, name: str, text: str) -> None:
        tz = zone(next(p.timezone for p in PATIENTS if p.name == name))
        first = name.split(maxsplit=1)[0]
        self.echo(f"{_when(self.clock.now().astimezone(tz))}  {first:<6} {text}")

    def _cancelled(self, name: str) -> None:
        with self.services.db.session() as session:
            rows = session.execute(
                select(
                    ScheduledMessage.step_key, ScheduledMessage.channel, ScheduledMessage.reason
                ).where(
                    ScheduledMessage.enrollment_id == self.enrollment[name],
                    ScheduledMessage.status == MessageStatus.CANCELLED.value,
                    ScheduledMessage.updated_at == self.clock.now(),
                )
            ).all()
        if rows:
            steps = ", ".join(f"{s}/{c}" for s, c, _ in rows)
            self.echo(f"{'':<22}{name.split(maxsplit=1)[0]:<6} CANCELLED ({rows[0][2]}): {steps}")

    def _housekeeping(self) -> None:
        now = self.clock.now()
        for enrollment_id in housekeeping.pause_overdue(self.services.db, now):
            name = next(n for n, e in self.enrollment.items() if e == enrollment_id)
            self._event(
                name,
                "PAUSED: past 42 weeks with no birth recorded; staff must "
                "confirm what happened before anything more is sent",
            )
        for enrollment_id in housekeeping.complete_finished(
            self.services.db, self.services.catalog, now
        ):
            name = next(n for n, e in self.enrollment.items() if e == enrollment_id)
            self._event(name, "PROGRAMME COMPLETE")

    def _next_midnight(self) -> datetime:
        now = self.clock.now()
        return datetime.combine(now.date() + timedelta(days=1), time(0, 5), UTC)


def _show_sent(services: Services, now: datetime, echo: Echo) -> None:
    """Print what this tick sent, as each patient would see it arrive."""
    with services.db.session() as session:
        rows = session.execute(
            select(
                Patient.name,
                Patient.timezone,
                Enrollment.edd,
                Enrollment.birth_date,
                ScheduledMessage.step_key,
                ScheduledMessage.channel,
                ScheduledMessage.subject,
                ScheduledMessage.body,
            )
            .join(Enrollment, Enrollment.patient_id == Patient.id)
            .join(ScheduledMessage, ScheduledMessage.enrollment_id == Enrollment.id)
            .where(ScheduledMessage.sent_at == now)
            .order_by(ScheduledMessage.id)
        ).all()
    for name, tz, edd, birth, step, channel, subject, body in rows:
        local = now.astimezone(zone(tz))
        stage = (
            f"day {(local.date() - birth).days} after birth"
            if birth
            else str(gestational_age(edd, local.date()))
        )
        text = f"subject: {subject}" if channel == "email" else f'"{body}"'
        echo(
            f"{_when(local)}  {name.split(maxsplit=1)[0]:<6} {stage:<19} "
            f"{channel.upper():<5} {step:<25} {text}"
        )


def _next_due(services: Services) -> datetime | None:
    with services.db.session() as session:
        found: datetime | None = session.execute(
            select(ScheduledMessage.next_attempt_at)
            .where(ScheduledMessage.status == MessageStatus.PENDING.value)
            .order_by(ScheduledMessage.next_attempt_at)
            .limit(1)
        ).scalar_one_or_none()
        return found


def _all_ended(services: Services) -> bool:
    with services.db.session() as session:
        statuses = set(session.execute(select(Enrollment.status)).scalars())
    return statuses.isdisjoint({"active"})


def _summary(services: Services, enrolled: dict[str, int], now: datetime, echo: Echo) -> None:
    echo("")
    echo("Summary (messages by status):")
    with services.db.session() as session:
        for p in PATIENTS:
            enrollment = session.get(Enrollment, enrolled[p.name])
            assert enrollment is not None
            patient = session.get(Patient, enrollment.patient_id)
            assert patient is not None
            statuses = [e.status for e in queries.timeline(session, patient, services.planner, now)]
            counts = {s: statuses.count(s) for s in sorted(set(statuses))}
            echo(
                f"  {p.name:<13} enrollment {enrollment.status:<11} "
                + ", ".join(f"{k} {v}" for k, v in counts.items())
            )


def _when(local: datetime) -> str:
    return f"{local:%a %d %b %Y %H:%M} {local.tzname():<4}"
