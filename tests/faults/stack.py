"""The production shape on one machine, for breaking on purpose.

PostgreSQL (a fresh database), a Redis of its own (so it can be killed and restarted empty),
the Twilio and SendGrid sandboxes (in this process, so their record of what arrived survives
their own "outage"), and the docker-compose.yml commands for web, worker and beat as
subprocesses. A `Run` enrols a cohort whose first messages are held, releases them all at
once, injects a fault while they are being sent, sends STOP / loss texts and staff pauses
meanwhile, waits until everything has settled and measures, from the sandboxes' own record
of every request they received and the database's record of every row:

- lost: a due row that did not end sent (the sandbox has it) or terminal with a reason;
- duplicates: a message the sandboxes received more than once;
- sends after a cancel: a message received after the cancellation's answer that the
  cancellation did not list as already with the provider;
- webhook latency (patients' texts during the run), time to recover after the fault.

Used by tests/faults (small and fast) and bench/faults.py (10,000 messages, rates, latency).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
from sqlalchemy import Row, create_engine, select, text, update
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from campaigns import enrollments, staff_accounts
from campaigns.bootstrap import build
from campaigns.rules.intake import EnrollmentRequest
from campaigns.rules.vocabulary import Channel, ConsentPurpose, ConsentSource, EddSource
from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_API_KEY, TEST_AUTH_TOKEN
from campaigns.sandbox.sendgrid_server import TEST_PUBLIC_KEY, SendGridSandbox
from campaigns.sandbox.twilio_server import TwilioSandbox
from campaigns.settings import Settings
from campaigns.storage.db import Database
from campaigns.storage.migrate import upgrade
from campaigns.storage.models import AuditEvent, Enrollment, ScheduledMessage
from tests.integration.processes import (
    BIN,
    ROOT,
    compose_command,
    env_with,
    free_port,
    start_redis,
    wait_until,
)

SM = ScheduledMessage
ADMIN_URL = os.environ.get(
    "CAMPAIGNS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SETTLED = {
    "sent",
    "delivered",
    "undelivered",
    "bounced",
    "failed",
    "cancelled",
    "skipped",
    "expired",
}
TWILIO_FROM = "+15005550006"


@dataclass(frozen=True)
class Shape:
    """How hard the stack is driven: the CI suite's small numbers or the benchmark's."""

    latency: float = 0.05  # seconds the sandboxes add to every call
    sms_rate: float = 0.0  # 0: no limit
    email_rate: float = 0.0
    batch: int = 25
    concurrency: int = 25
    worker_processes: int = 2
    web_processes: int = 2
    provider_timeout: float = 2.0
    lease: int = 3
    claim_timeout: int = 5
    reconcile_after: int = 4
    upkeep_interval: float = 1.0
    dispatch_interval: float = 0.5


class Stack:
    def __init__(self, tmp: Path, shape: Shape) -> None:
        self.tmp, self.shape = tmp, shape
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.logs: dict[str, Path] = {}
        self.restarts: list[str] = []
        self._cohort = 0

    # -- starting and stopping -----------------------------------------------------------

    def start(self) -> None:
        self.db_name = f"faults_{uuid.uuid4().hex[:10]}"
        self._admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        self.url = make_url(ADMIN_URL).set(database=self.db_name).render_as_string(False)
        upgrade(self.url)
        self.db = Database.from_url(self.url, pool_size=4)
        self.redis_port = free_port()
        self.start_redis()
        self.web_port, self.staff_port = free_port(), free_port()
        self.public = f"http://127.0.0.1:{self.web_port}"
        self.internal = f"http://127.0.0.1:{self.staff_port}"
        self.twilio_port, self.sendgrid_port = free_port(), free_port()
        self.start_sandboxes()
        self.env = env_with(
            CAMPAIGNS_ENVIRONMENT="test",
            CAMPAIGNS_DATABASE_URL=self.url,
            CAMPAIGNS_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            CAMPAIGNS_PUBLIC_URL=self.public,
            CAMPAIGNS_STAFF_URL=self.internal,
            CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00",
            CAMPAIGNS_HOLIDAY_REGION="none",
            CAMPAIGNS_SMS_PROVIDER="twilio",
            CAMPAIGNS_EMAIL_PROVIDER="sendgrid",
            TWILIO_ACCOUNT_SID=TEST_ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=TEST_AUTH_TOKEN,
            TWILIO_FROM=TWILIO_FROM,
            TWILIO_API_BASE_URL=f"http://127.0.0.1:{self.twilio_port}",
            SENDGRID_API_KEY=TEST_API_KEY,
            SENDGRID_API_HOST=f"http://127.0.0.1:{self.sendgrid_port}",
            SENDGRID_FROM="hello@santi.example",
            SENDGRID_EVENT_PUBLIC_KEY=TEST_PUBLIC_KEY,
            # The sandbox lists a message in Email Activity as soon as it accepts it.
            CAMPAIGNS_SENDGRID_ACTIVITY_LAG_SECONDS="2",
            CAMPAIGNS_SMS_RATE=str(self.shape.sms_rate),
            CAMPAIGNS_EMAIL_RATE=str(self.shape.email_rate),
            CAMPAIGNS_SEND_BATCH_SIZE=str(self.shape.batch),
            CAMPAIGNS_SEND_CONCURRENCY=str(self.shape.concurrency),
            CAMPAIGNS_PROVIDER_TIMEOUT_SECONDS=str(self.shape.provider_timeout),
            CAMPAIGNS_SEND_LEASE_SECONDS=str(self.shape.lease),
            CAMPAIGNS_CLAIM_TIMEOUT_SECONDS=str(self.shape.claim_timeout),
            CAMPAIGNS_RECONCILE_AFTER_SECONDS=str(self.shape.reconcile_after),
            CAMPAIGNS_REVIEW_AFTER_SECONDS="600",
            CAMPAIGNS_UPKEEP_INTERVAL_SECONDS=str(self.shape.upkeep_interval),
            CAMPAIGNS_DISPATCH_INTERVAL_SECONDS=str(self.shape.dispatch_interval),
            CAMPAIGNS_RETRY_BASE_SECONDS="1",
            CAMPAIGNS_RETRY_MAX_SECONDS="4",
            CAMPAIGNS_MAX_ATTEMPTS="10",
        )
        self.start_web()
        self.start_staff()
        self.staff = StaffSession(self.db, self.internal)
        self.start_worker()
        self.start_beat()
        self._supervising = threading.Event()
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()

    def _supervise(self) -> None:
        """What docker compose's `restart: unless-stopped` does: a service process that exits
        on its own (not killed by the test) is started again."""
        starts = {
            "web": self.start_web,
            "staff": self.start_staff,
            "worker": self.start_worker,
            "beat": self.start_beat,
        }
        while not self._supervising.wait(0.5):
            for name, start in starts.items():
                process = self.processes.get(name)
                if process is not None and process.poll() is not None:
                    self.restarts.append(f"{name} exited ({process.returncode}); restarted")
                    self.processes.pop(name, None)
                    start()

    def stop(self) -> None:
        self._supervising.set()
        self.staff.close()
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        self.stop_sandboxes()
        self.db.dispose()
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        self._admin.dispose()

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.tmp / f"{name}.{len(self.logs)}.log"
        self.logs[name] = log
        with log.open("w") as sink:
            # Its own process group: a kill reaches the worker's pool children too.
            self.processes[name] = subprocess.Popen(
                argv,
                env=env or self.env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        try:
            if name == "redis":  # not a process group of its own
                process.send_signal(sig)
            else:
                os.killpg(process.pid, sig)
        except ProcessLookupError:
            process.wait()
            return
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_of(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def start_redis(self) -> None:
        process = start_redis(self.redis_port, self.tmp / f"redis.{len(self.logs)}.log")
        # start_redis's process shares our process group: keep it apart for a clean kill.
        self.processes["redis"] = process

    def kill_redis(self) -> None:
        self.kill("redis")

    def start_web(self) -> None:
        argv = compose_command("web")
        argv[argv.index("--port") + 1] = str(self.web_port)
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--workers") + 1] = str(self.shape.web_processes)
        self.spawn("web", argv)
        wait_until(self._web_answers, 60, "the web processes")

    def start_staff(self) -> None:
        """The staff listener (docker-compose.yml's `staff`): where the staff pause from."""
        argv = compose_command("staff")
        argv[argv.index("--port") + 1] = str(self.staff_port)
        argv[argv.index("--host") + 1] = "127.0.0.1"
        self.spawn("staff", argv)
        wait_until(lambda: self._answers(self.internal), 60, "the staff process")

    def _web_answers(self) -> bool:
        return self._answers(self.public)

    @staticmethod
    def _answers(base: str) -> bool:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def start_worker(self) -> None:
        argv = compose_command("worker")
        argv[argv.index("--concurrency") + 1] = str(self.shape.worker_processes)
        self.spawn("worker", argv)
        wait_until(lambda: " ready." in self.log_of("worker"), 60, "the worker")

    def start_beat(self) -> None:
        argv = compose_command("beat")
        argv[argv.index("--schedule") + 1] = str(self.tmp / "celerybeat-schedule")
        self.spawn("beat", argv)

    def start_sandboxes(self, kept: tuple[Any, ...] | None = None) -> None:
        self.twilio = TwilioSandbox(
            self.twilio_port, latency=self.shape.latency, callback_delay=0.2
        )
        self.sendgrid = SendGridSandbox(
            self.sendgrid_port,
            latency=self.shape.latency,
            events_url=self.public + "/webhooks/sendgrid/events",
            callback_delay=0.2,
        )
        if kept is not None:  # back after an outage: what arrived before is kept
            (
                self.twilio.recorder,
                self.twilio.store,
                self.sendgrid.recorder,
                self.sendgrid.activity,
            ) = kept
        self.twilio.start()
        self.sendgrid.start()

    def stop_sandboxes(self) -> tuple[Any, ...]:
        kept = (
            self.twilio.recorder,
            self.twilio.store,
            self.sendgrid.recorder,
            self.sendgrid.activity,
        )
        self.twilio.stop()
        self.sendgrid.stop()
        return kept

    def fault(self, sandbox: str, body: dict[str, Any] | None) -> None:
        """Set (or with None, clear) a sandbox's fault over its own HTTP control endpoint."""
        port = self.twilio_port if sandbox == "twilio" else self.sendgrid_port
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/_sandbox/faults",
            data=json.dumps(body).encode() if body else None,
            method="PUT" if body else "DELETE",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).close()

    def terminate_connections(self) -> int:
        """pg_terminate_backend on every connection the service has to its database."""
        with self._admin.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid() "
                        "AND application_name <> 'faults'"
                    ),
                    {"name": self.db_name},
                ).all()
            )

    # -- a cohort ------------------------------------------------------------------------

    def enroll(self, patients: int) -> Cohort:
        """Enrol patients (SMS and email) whose first messages are due but held."""
        self._cohort += 1
        number = self._cohort
        future = datetime.now(UTC) + timedelta(hours=1)  # held: due an hour from now
        settings = Settings(
            database_url=self.url,
            send_window="Mon-Sun 00:00-24:00",
            holiday_region="none",
            environment="test",
        )
        services = build(settings)
        phone_numbers = [f"+4475{number:02d}{i:06d}" for i in range(patients)]
        requests = [
            EnrollmentRequest(
                campaign="leg-cramps",
                name=f"Patient {number}-{i}",
                phone=phone_numbers[i],
                email=f"p{number}-{i}@example.com",
                edd=(future + timedelta(days=140)).date(),
                edd_source=EddSource.SCAN,
                timezone="Europe/London",
                language="en",
                channels=frozenset(Channel),
                consents=frozenset({ConsentPurpose.PROGRAMME}),
            )
            for i in range(patients)
        ]
        done = enrollments.enroll_many(
            services.db,
            services.planner,
            requests,
            future,
            source=ConsentSource.CSV,
            actor="faults",
        )
        services.close()
        by_enrollment = {d.enrollment_id: d.patient_id for d in done}
        with self.db.session() as session:
            rows = session.execute(
                select(SM.id, SM.enrollment_id, SM.channel).where(
                    SM.enrollment_id.in_(list(by_enrollment)),
                    SM.status == "pending",
                    SM.next_attempt_at <= future + timedelta(minutes=1),
                )
            ).all()
        due = {r.id: (by_enrollment[r.enrollment_id], Channel(r.channel)) for r in rows}
        phones = {d.patient_id: phone for d, phone in zip(done, phone_numbers, strict=True)}
        return Cohort(number, due, by_enrollment, phones)

    def release(self, cohort: Cohort) -> None:
        with self.db.session() as session:
            session.execute(
                update(SM)
                .where(SM.id.in_(list(cohort.due)))
                .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
            )

    def received(self) -> list[dict[str, Any]]:
        return [{**m, "channel": "sms"} for m in self.twilio.recorder.snapshot()] + [
            {**m, "channel": "email"} for m in self.sendgrid.recorder.snapshot()
        ]

    def received_for(self, cohort: Cohort) -> list[dict[str, Any]]:
        return [m for m in self.received() if m.get("message_id") in cohort.due]

    # -- patients' texts and staff actions during a run -----------------------------------

    def text(self, phone: str, body: str) -> float:
        """A patient's text to the webhook, signed as Twilio signs it; returns its latency."""
        params = {
            "MessageSid": "SM" + uuid.uuid4().hex,
            "AccountSid": TEST_ACCOUNT_SID,
            "From": phone,
            "To": TWILIO_FROM,
            "Body": body,
            "NumMedia": "0",
        }
        path = "/webhooks/twilio/sms"
        signature = RequestValidator(TEST_AUTH_TOKEN).compute_signature(self.public + path, params)
        started = time.monotonic()
        answer = httpx.post(
            self.public + path,
            content=urllib.parse.urlencode(params),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
            timeout=30,
        )
        took = time.monotonic() - started
        if answer.status_code != 200:
            raise AssertionError(f"the SMS webhook answered {answer.status_code}")
        return took

    def pause(self, enrollment_id: int) -> float:
        """A clinician presses "Pause messages" on the staff listener (signed in, CSRF token)."""
        started = time.monotonic()
        answer = self.staff.post(f"/staff/enrollments/{enrollment_id}/pause")
        if answer.status_code not in (200, 303):
            raise AssertionError(f"pause answered {answer.status_code}")
        return time.monotonic() - started


class StaffSession:
    """A clinician signed in to the staff listener through its sign-in form, as a browser."""

    PASSWORD = "faults suite clinician password"

    def __init__(self, db: Database, base: str) -> None:
        self.base = base
        staff_accounts.add(
            db,
            "clinician@faults.example",
            "clinician",
            datetime.now(UTC),
            actor="faults",
            password=self.PASSWORD,
        )
        self._lock = threading.Lock()
        self.client = httpx.Client(base_url=base, timeout=30, follow_redirects=True)
        form = self.client.get("/staff/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token, "no sign-in form"
        signed = self.client.post(
            "/staff/login",
            data={
                "email": "clinician@faults.example",
                "password": self.PASSWORD,
                "csrf_token": token.group(1),
            },
        )
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', signed.text)
        assert csrf, f"not signed in ({signed.status_code})"
        self.csrf = csrf.group(1)

    def close(self) -> None:
        self.client.close()

    def post(self, path: str) -> httpx.Response:
        with self._lock:  # one browser: its cookie jar is not shared between threads
            return self.client.post(path, data={"csrf_token": self.csrf})


@dataclass
class Cohort:
    number: int
    due: dict[int, tuple[int, Channel]]  # message id -> (patient id, channel)
    enrollments: dict[int, int]  # enrollment id -> patient id
    phones: dict[int, str]  # patient id -> phone

    def enrollment_of(self, patient_id: int) -> int:
        return next(e for e, p in self.enrollments.items() if p == patient_id)


@dataclass
class Cancel:
    patient_id: int
    kind: str  # stop, loss, pause
    channels: frozenset[Channel]
    answered_at: float  # wall clock (time.time()) when its answer arrived: committed before
    action: str  # the audit action that lists what was in flight


@dataclass
class Result:
    """One fault run, measured."""

    fault: str
    due: int
    sent_once: int
    duplicates: int
    lost: int
    cancelled: int
    failed: int
    unknown_reconciled: int
    needs_review: int
    sends_after_cancel: int
    texts: int
    text_p50_ms: float
    text_p99_ms: float
    text_max_ms: float
    recovered_s: float | None  # fault over -> the next message reached a provider
    settled_s: float  # fault over -> every due row settled
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "problems"}


class Run:
    """One cohort through one fault: enrol, release, fault, cancel and text, settle, measure."""

    def __init__(self, stack: Stack, name: str, patients: int, *, cancels: int = 6) -> None:
        self.stack, self.name = stack, name
        self.cohort = stack.enroll(patients)
        self.cancels: list[Cancel] = []
        self.latencies: list[float] = []
        # The last patients enrolled are the last sent to: their cancellations land mid-run.
        everyone = sorted(self.cohort.phones)
        self.chosen = everyone[-cancels:]
        self.talkers = everyone[: 6 * cancels]
        self._errors: list[str] = []

    def go(
        self,
        fault: Callable[[], float],
        *,
        start_after: float = 0.2,
        settle_timeout: float = 90,
    ) -> Result:
        """Release the cohort; once `start_after` of it has reached the providers, run `fault`
        (which returns the wall-clock time the fault ended) with texts and cancellations going
        on meanwhile; then wait for everything to settle."""
        stack, total = self.stack, len(self.cohort.due)
        stack.release(self.cohort)
        wait_until(
            lambda: len(stack.received_for(self.cohort)) >= start_after * total,
            60,
            f"{self.name}: sending to start",
        )
        talking = threading.Thread(target=self._talk, name="texts")
        talking.start()
        fault_over = fault()
        talking.join(120)
        recovered = self._first_received_after(fault_over, timeout=60)
        self._settle(settle_timeout)
        settled = time.time() - fault_over
        return self._measure(recovered, settled)

    def _talk(self) -> None:
        """Cancellations and ordinary texts while the fault is on, each timed."""
        kinds = ["stop", "loss", "pause"]
        for number, patient_id in enumerate(self.chosen):
            kind = kinds[number % 3]
            try:
                if kind == "stop":
                    self.latencies.append(self.stack.text(self.cohort.phones[patient_id], "STOP"))
                    channels, action = frozenset({Channel.SMS}), "opted_out"
                elif kind == "loss":
                    self.latencies.append(
                        self.stack.text(self.cohort.phones[patient_id], "we lost the baby")
                    )
                    channels, action = frozenset(Channel), "loss_hold"
                else:
                    self.stack.pause(self.cohort.enrollment_of(patient_id))
                    channels, action = frozenset(Channel), "paused"
            except Exception as exc:
                self._errors.append(f"{kind} for patient {patient_id} failed: {exc}")
                continue
            self.cancels.append(Cancel(patient_id, kind, channels, time.time(), action))
            for phone in (self.cohort.phones[p] for p in self.talkers[number * 6 : number * 6 + 6]):
                try:
                    self.latencies.append(self.stack.text(phone, "thank you, that helps"))
                except Exception as exc:
                    self._errors.append(f"a text failed: {exc}")

    def _first_received_after(self, moment: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after: list[float] = [
                m["received_at"]
                for m in self.stack.received_for(self.cohort)
                if m.get("received_at", 0) > moment
            ]
            if after:
                return min(after) - moment
            if self._open() == 0:
                return None  # nothing left to send
            time.sleep(0.1)
        return None

    def _open(self) -> int:
        with self.stack.db.session() as session:
            return int(
                session.execute(
                    select(text("count(*)"))
                    .select_from(SM)
                    .where(
                        SM.id.in_(list(self.cohort.due)),
                        SM.status.not_in(list(SETTLED)),
                        # Left for staff: settled, as far as the machine is concerned.
                        ~((SM.status == "unknown") & (SM.reason == "needs_review")),
                    )
                ).scalar_one()
            )

    def _settle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._open() and time.monotonic() < deadline:
            time.sleep(0.25)

    def _measure(self, recovered: float | None, settled: float) -> Result:
        stack, cohort = self.stack, self.cohort
        with stack.db.session() as session:
            rows = {
                r.id: r
                for r in session.execute(
                    select(SM.id, SM.status, SM.reason, SM.channel).where(
                        SM.id.in_(list(cohort.due))
                    )
                )
            }
            audits = session.execute(
                select(AuditEvent.action, AuditEvent.patient_id, AuditEvent.detail).where(
                    AuditEvent.patient_id.in_(list(cohort.phones)),
                    AuditEvent.action.in_(["opted_out", "loss_hold", "paused"]),
                )
            ).all()
            reconciled = session.execute(
                select(text("count(*)"))
                .select_from(AuditEvent)
                .where(
                    AuditEvent.action == "send_reconciled",
                    AuditEvent.message_id.in_(list(cohort.due)),
                )
            ).scalar_one()
            ended = dict(
                session.execute(
                    select(Enrollment.id, Enrollment.status).where(
                        Enrollment.id.in_(list(cohort.enrollments))
                    )
                ).all()
            )
        arrivals = Counter(m["message_id"] for m in stack.received_for(cohort))
        problems = list(self._errors)
        cancelled_patients = {c.patient_id: c for c in self.cancels}
        sent_once = duplicates = lost = 0
        for message_id, (patient_id, channel) in cohort.due.items():
            row = rows[message_id]
            count = arrivals.get(message_id, 0)
            if count > 1:
                duplicates += 1
                problems.append(f"message {message_id} reached the provider {count} times")
            if row.status in ("sent", "delivered", "undelivered", "bounced"):
                if count == 0:
                    lost += 1
                    problems.append(f"message {message_id} is {row.status} but never arrived")
                else:
                    sent_once += 1
            elif row.status in SETTLED or row.reason == "needs_review":
                cancel = cancelled_patients.get(patient_id)
                if row.status == "cancelled" and (cancel is None or channel not in cancel.channels):
                    problems.append(f"message {message_id} cancelled ({row.reason}) for no cancel")
                if count:
                    problems.append(f"message {message_id} arrived but is {row.status}")
            else:
                lost += 1
                problems.append(f"message {message_id} never settled: {row.status} {row.reason}")
        after_cancel = self._after_cancel(audits, problems)
        for cancel in self.cancels:
            if cancel.kind in ("loss", "pause"):
                status = ended.get(cohort.enrollment_of(cancel.patient_id))
                if status not in ("loss_hold", "paused"):  # a text holds; only staff end
                    problems.append(f"{cancel.kind} of patient {cancel.patient_id}: {status}")
        statuses = Counter(r.status for r in rows.values())
        latencies = sorted(self.latencies) or [0.0]
        return Result(
            fault=self.name,
            due=len(cohort.due),
            sent_once=sent_once,
            duplicates=duplicates,
            lost=lost,
            cancelled=statuses.get("cancelled", 0),
            failed=statuses.get("failed", 0),
            unknown_reconciled=int(reconciled),
            needs_review=sum(1 for r in rows.values() if r.reason == "needs_review"),
            sends_after_cancel=after_cancel,
            texts=len(self.latencies),
            text_p50_ms=round(statistics.median(latencies) * 1000, 1),
            text_p99_ms=round(_percentile(latencies, 0.99) * 1000, 1),
            text_max_ms=round(latencies[-1] * 1000, 1),
            recovered_s=None if recovered is None else round(recovered, 2),
            settled_s=round(settled, 2),
            problems=problems,
        )

    def _after_cancel(
        self, audits: Sequence[Row[str, int | None, dict[str, Any]]], problems: list[str]
    ) -> int:
        """Messages that reached a provider after a cancellation had answered (so committed)
        without that cancellation listing them as already in flight."""
        in_flight: dict[tuple[int, str], set[int]] = {}
        for action, patient_id, detail in audits:
            assert patient_id is not None  # the query asked for the cohort's patients only
            in_flight.setdefault((patient_id, action), set()).update(detail.get("in_flight") or [])
        breaches = 0
        for message in self.stack.received_for(self.cohort):
            patient_id, channel = self.cohort.due[message["message_id"]]
            for cancel in self.cancels:
                if cancel.patient_id != patient_id or channel not in cancel.channels:
                    continue
                listed = in_flight.get((patient_id, cancel.action), set())
                if (
                    message["received_at"] > cancel.answered_at
                    and message["message_id"] not in listed
                ):
                    breaches += 1
                    problems.append(
                        f"message {message['message_id']} reached the provider after the "
                        f"{cancel.kind} of patient {patient_id} committed"
                    )
        return breaches


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))]


# -- the faults ------------------------------------------------------------------------------


def kill_worker(stack: Stack, down: float = 1.0) -> float:
    """kill -9 of the worker (every pool process) mid-batch; a new one a moment later."""
    stack.kill("worker")
    time.sleep(down)
    stack.start_worker()
    return time.time()


def kill_worker_mid_call(stack: Stack, down: float = 1.0) -> float:
    """kill -9 while calls are inside the provider (it accepted them and is slow to answer),
    with no delivery callbacks meanwhile: the rows' go-aheads committed, so only the provider's
    own records can settle them (reconciled, never blindly resent)."""
    events_url = stack.sendgrid.events_url
    stack.twilio.send_callbacks, stack.sendgrid.events_url = False, None
    for sandbox in ("twilio", "sendgrid"):
        stack.fault(sandbox, {"delay": 2.0, "accept": True, "count": 10})
    wait_until(lambda: _fault_spent(stack), 30, "calls to be inside the provider")
    stack.kill("worker")
    for sandbox in ("twilio", "sendgrid"):
        stack.fault(sandbox, None)
    time.sleep(down)
    stack.start_worker()
    stack.twilio.send_callbacks, stack.sendgrid.events_url = True, events_url
    return time.time()


def restart_redis_empty(stack: Stack, down: float = 2.0) -> float:
    """kill -9 of Redis (queued batches and rate-limit state gone); an empty one restarts."""
    stack.kill_redis()
    time.sleep(down)
    stack.start_redis()
    return time.time()


def provider_status_storm(stack: Stack, status: int, seconds: float = 3.0) -> float:
    for sandbox in ("twilio", "sendgrid"):
        stack.fault(sandbox, {"status": status})
    time.sleep(seconds)
    for sandbox in ("twilio", "sendgrid"):
        stack.fault(sandbox, None)
    return time.time()


def provider_5xx(stack: Stack, count: int = 20) -> float:
    """Twilio answers 500 (the message may exist: unknown, reconciled); SendGrid 503 (retried)."""
    stack.fault("twilio", {"status": 500, "count": count})
    stack.fault("sendgrid", {"status": 503, "count": count})
    wait_until(lambda: _fault_spent(stack), 30, "the 5xx answers to be given")
    return time.time()


def slow_accepting_provider(stack: Stack, count: int = 15) -> float:
    """Answers later than the client waits, having accepted the message, and sends no
    delivery callback for it: the worst case, which only a lookup can settle."""
    delay = stack.shape.provider_timeout + 1.5
    events_url = stack.sendgrid.events_url
    stack.twilio.send_callbacks, stack.sendgrid.events_url = False, None
    for sandbox in ("twilio", "sendgrid"):
        stack.fault(sandbox, {"delay": delay, "accept": True, "count": count})
    wait_until(lambda: _fault_spent(stack), 30, "the slow answers to be given")
    time.sleep(delay)
    stack.twilio.send_callbacks, stack.sendgrid.events_url = True, events_url
    return time.time()


def sandbox_down(stack: Stack, seconds: float = 3.0) -> float:
    kept = stack.stop_sandboxes()
    time.sleep(seconds)
    stack.start_sandboxes(kept)
    return time.time()


def database_connections_killed(stack: Stack, times: int = 3, every: float = 0.7) -> float:
    for _ in range(times):
        stack.terminate_connections()
        time.sleep(every)
    return time.time()


def _fault_spent(stack: Stack) -> bool:
    for port in (stack.twilio_port, stack.sendgrid_port):
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/_sandbox/faults", timeout=5
        ) as answer:
            state = json.load(answer)
        if state and state.get("count"):
            return False
    return True


FAULTS: dict[str, Callable[[Stack], float]] = {
    "worker killed (kill -9) mid-batch": kill_worker,
    "worker killed with calls inside the provider": kill_worker_mid_call,
    "Redis killed, restarted empty": restart_redis_empty,
    "provider 429 storm (3 s)": lambda stack: provider_status_storm(stack, 429),
    "provider 5xx": provider_5xx,
    "provider answers after the client timeout": slow_accepting_provider,
    "provider down (3 s) and back": sandbox_down,
    "database connections killed mid-batch": database_connections_killed,
}

__all__ = ["BIN", "FAULTS", "Result", "Run", "Shape", "Stack"]
