"""The `campaigns` command. Every subcommand reads the same settings (CAMPAIGNS_* variables)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from campaigns import alerts, halts, logs, metrics, queries, readiness
from campaigns.bootstrap import Services, build, clinic_from
from campaigns.enrollments import Enrolled, Enrollments
from campaigns.rules import keywords
from campaigns.rules.catalog import CatalogError
from campaigns.rules.content import ContentRenderer
from campaigns.rules.errors import InputError, NotFoundError, StateError
from campaigns.rules.intake import parse_date, parse_edd_source, parse_enrollment
from campaigns.rules.keywords import Classification, LexiconError, load_reader
from campaigns.rules.replies import Decision, Situation, decide
from campaigns.rules.vocabulary import ConsentSource
from campaigns.rules.window import WindowError, zone
from campaigns.settings import get_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Pregnancy education campaigns by SMS and email.",
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
#: Who the audit trail says made a change from the command line.
CLI_ACTOR = "cli"


def main() -> None:
    # Commands log warnings only, as text; `serve` sets the level and format it is given.
    handler = logging.StreamHandler()
    handler.setFormatter(logs.TextFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    app()


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def services(*, web: bool = False, staff: bool = False) -> Iterator[Services]:
    """Build the wiring; a bad setting or campaign file stops here with its message."""
    try:
        built = build(get_settings(), web=web, staff=staff)
    except (CatalogError, WindowError, ValueError) as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits
    try:
        yield built
    except InputError as exc:
        fail(str(exc))
    except (NotFoundError, StateError) as exc:
        fail(str(exc), code=1)
    finally:
        built.close()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from campaigns.content_versions import seed
    from campaigns.rules.clock import SystemClock
    from campaigns.storage.db import Database
    from campaigns.storage.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    db = Database.from_url(settings.database_url, pool_size=1)
    try:
        # A campaign new to this database starts as its repository folder (docs/decisions.md).
        for key in seed(db, settings.templates_dir, SystemClock().now()):
            typer.echo(f"campaign {key}: version 1 from the repository, live")
    finally:
        db.dispose()
    typer.echo(f"database is up to date ({_safe_url(settings.database_url)})")


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _check_serve(host: str, workers: int, only: str) -> None:
    """Refuse what cannot work, before anything is built or listens."""
    from campaigns.settings import DEVELOPMENT_SECRET
    from campaigns.web.app import PARTS

    if only not in PARTS:
        fail(f"--only: {only!r} is not one of {', '.join(PARTS)}")
    settings = get_settings()
    if workers > 1 and settings.embedded:
        fail("--workers: more than one web process needs CAMPAIGNS_BROKER_URL (Redis)")
    if only != "all" and settings.embedded:
        fail("--only: the embedded worker runs with --only all; split parts need a broker")
    if host not in LOOPBACK and settings.secret_key.get_secret_value() == DEVELOPMENT_SECRET:
        fail(
            f"--host {host}: the development CAMPAIGNS_SECRET_KEY must not be reachable from "
            "other machines; set a secret key (see docs/operations.md, Security)"
        )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Web processes (needs a broker: the embedded mode runs one).")
    ] = 1,
    only: Annotated[
        str,
        typer.Option(
            "--only",
            help="all, staff (staff pages, /readyz, /metrics) or webhooks (providers' "
            "webhooks, patients' links): production runs the last two apart.",
        ),
    ] = "all",
) -> None:
    """Run the web service; with the embedded broker, also the worker and beat."""
    import os
    import tempfile

    import uvicorn

    from campaigns.web.app import PARTS, create_app

    _check_serve(host, workers, only)
    several = workers > 1
    if several and not metrics.multiprocess_dir():
        # Each web process counts into its own files; the metrics port sums them.
        os.environ[metrics.MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="campaigns-metrics-")
    # Checks settings and content before anything listens.
    with services(web=True, staff=only != "webhooks") as built:
        logs.configure(built.settings)
        metrics.serve_port(built.settings.metrics_port)
        mode = "embedded worker and beat" if built.settings.embedded else f"{workers} web process"
        typer.echo(
            f"campaigns: {mode}{'es' if several else ''} ({only}), SMS via {built.sms.name}, "
            f"email via {built.email.name}"
        )
        shown = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104 - shown, not bound
        if only != "webhooks":
            typer.echo(f"Staff UI: http://{shown}:{port}/staff/")
        if not several:
            part = next(p for p in PARTS if p == only)
            web = create_app(built, run_embedded=built.settings.embedded, part=part)
            uvicorn.run(web, host=host, port=port, log_config=None, access_log=False)
            return
    # Each worker process builds its own wiring after the fork (campaigns.web.asgi).
    os.environ["CAMPAIGNS_WEB_PART"] = only
    uvicorn.run(
        "campaigns.web.asgi:create",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,  # each process logs as campaigns.logs configures it
        # The app writes its own access line (campaigns.web.protection): the route template,
        # never a token or query string, and the staff member.
        access_log=False,
    )


@app.command()
def enroll(
    name: Annotated[str, typer.Option(help="Patient's full name.")],
    edd: Annotated[str, typer.Option(help="Estimated due date, YYYY-MM-DD.")],
    edd_source: Annotated[str, typer.Option(help="scan|lmp|patient|clinician")],
    consent: Annotated[
        str,
        typer.Option(help="programme[,marketing_sms,marketing_email]: what the patient agreed to."),
    ],
    phone: Annotated[str, typer.Option(help="Mobile number.")] = "",
    email: Annotated[str, typer.Option(help="Email address.")] = "",
    tz: Annotated[str, typer.Option(help="IANA timezone; default from settings.")] = "",
    language: Annotated[str, typer.Option(help="Language code.")] = "en",
    channels: Annotated[str, typer.Option(help="sms,email")] = "sms",
    campaign: Annotated[str, typer.Option(help="Campaign key (default: the first).")] = "",
    discreet: Annotated[bool, typer.Option(help="Discreet wording.")] = False,
    clinic_ref: Annotated[str, typer.Option(help="The clinic's own reference.")] = "",
    json_out: JsonFlag = False,
) -> None:
    """Enrol a patient and plan their messages."""
    with services() as built:
        now = built.clock.now()
        request = parse_enrollment(
            {
                "campaign": campaign,
                "name": name,
                "phone": phone,
                "email": email,
                "edd": edd,
                "edd_source": edd_source,
                "tz": tz,
                "language": language,
                "channels": channels,
                "consent": consent,
                "discreet": "yes" if discreet else "",
                "clinic_ref": clinic_ref,
            },
            built.intake,
            now,
        )
        [done] = built.enrollments.enroll([request], source=ConsentSource.CLI, actor="cli")
    _print_enrolled(done, zone(request.timezone), json_out=json_out)


def _print_enrolled(done: Enrolled, tz: ZoneInfo, *, json_out: bool) -> None:
    pending = [p for p in done.planned if p.status == "pending"]
    skipped = len(done.planned) - len(pending)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "patient_id": done.patient_id,
                    "enrollment_id": done.enrollment_id,
                    "planned": len(pending),
                    "skipped": skipped,
                }
            )
        )
        return
    typer.echo(
        f"enrolled patient {done.patient_id} (enrollment {done.enrollment_id}): "
        f"{len(pending)} messages planned, {skipped} skipped"
    )
    if pending:
        first = pending[0]
        typer.echo(
            f"first message: {first.step.key} by {first.channel} at "
            f"{first.due_at.astimezone(tz):%a %d %b %Y %H:%M %Z}"
        )


@app.command("import")
def import_csv(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE.csv", help="The patients (docs/staff-import.md).", exists=True
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row and write nothing.")
    ] = False,
) -> None:
    """Enrol the patients of a CSV file: every bad row is listed by line and field, the good
    ones are enrolled in one transaction, and those already enrolled are left alone.

    Exit status: 0 every row imported (or already enrolled); 1 some rows were bad (listed;
    the others imported); 2 the file could not be read (nothing imported)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from campaigns import importing
    from campaigns.rules.csv_file import FileError
    from campaigns.rules.wording import label

    data = path.read_bytes()
    total = max(0, data.count(b"\n") - 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    console = Console(stderr=True)  # the bar on stderr; the report on stdout
    with services() as built:
        now = built.clock.now()
        try:
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("Checked", total=total or None)
                report = importing.check(
                    built.db,
                    built.intake,
                    data,
                    now,
                    progress=lambda n: bar.update(task, completed=n),
                )
                bar.update(task, completed=report.rows, total=report.rows)
        except FileError as exc:
            fail("the file cannot be imported:\n  " + "\n  ".join(exc.problems))
        for problem in report.problems:
            typer.echo(f"line {problem.line}, {label(problem.field)}: {problem.message}")
        for known in report.already:
            typer.echo(f"line {known.line}: already enrolled (patient {known.patient_id})")
        if dry_run:
            written = 0
        else:
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("Written", total=len(report.good))
                written = importing.enrol(
                    built.db,
                    built.planner,
                    report,
                    now,
                    actor=CLI_ACTOR,
                    progress=lambda n: bar.update(task, completed=n),
                )
    verb = "would import" if dry_run else "imported"
    typer.echo(
        f"{report.rows} rows: {verb} {len(report.good) if dry_run else written}, "
        f"{len(report.already)} already enrolled, {report.bad} with problems"
        + (" (dry run: nothing written)" if dry_run else "")
    )
    if report.bad:
        raise typer.Exit(1)


@app.command()
def preview(
    campaign: Annotated[str, typer.Argument(help="Campaign key, e.g. leg-cramps.")],
    edd: Annotated[str, typer.Option(help="Due date, YYYY-MM-DD.")],
    tz: Annotated[str, typer.Option(help="IANA timezone.")] = "",
    enrolled: Annotated[str, typer.Option(help="Enrolment date (default today).")] = "",
    birth: Annotated[str, typer.Option(help="Birth date, to see the after-birth steps.")] = "",
    marketing: Annotated[bool, typer.Option(help="Assume marketing consent.")] = False,
    discreet: Annotated[bool, typer.Option(help="Discreet wording.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Show the plan a hypothetical patient would get, with every message's text."""
    with services() as built:
        entries = queries.preview_request(
            built.catalog,
            built.window,
            built.renderer,
            campaign=campaign,
            edd=edd,
            timezone=tz or built.settings.default_timezone,
            enrolled=enrolled,
            birth=birth,
            marketing=marketing,
            discreet=discreet,
            now=built.clock.now(),
        )
        if json_out:
            typer.echo(json.dumps([e.as_json() for e in entries], indent=2))
            return
        for e in entries:
            text = e.subject if e.subject else e.text
            reason = f" ({e.reason})" if e.reason else ""
            typer.echo(
                f"{e.due_local[:16].replace('T', ' ')}  {e.channel:<5} {e.status:<8}"
                f"{reason:<20} {e.step:<26} {text}"
            )


@app.command()
def timeline(
    patient: Annotated[str, typer.Argument(help="Patient id or phone number.")],
    json_out: JsonFlag = False,
) -> None:
    """A patient's messages: when each is or was due, and what happened to it."""
    with services() as built, built.db.session() as session:
        found = queries.find_patient(session, patient)
        entries = queries.timeline(session, found, built.planner, built.clock.now())
        if json_out:
            typer.echo(json.dumps([e.as_json() for e in entries], indent=2))
            return
        typer.echo(f"patient {found.id} ({found.timezone})")
        for e in entries:
            reason = f" ({e.reason})" if e.reason else ""
            typer.echo(
                f"{e.due_local[:16].replace('T', ' ')}  v{e.version} {e.channel:<5} "
                f"{e.status + reason:<34} {e.step}"
            )


@app.command()
def dispatch(
    once: Annotated[bool, typer.Option("--once", help="Run one dispatch tick and exit.")] = False,
) -> None:
    """Claim due messages and send them (embedded) or queue them for the workers (Celery)."""
    if not once:
        fail("only `campaigns dispatch --once` is supported; beat runs the ticks in production")
    with services() as built:
        if built.settings.embedded:
            from campaigns.runtime import InlineQueue, tick

            count = tick(built, InlineQueue(built))
        else:
            from campaigns import delivery
            from workers.tasks import CeleryQueue

            count = delivery.dispatch_due(built.db, CeleryQueue(), built.clock, built.policy)
        typer.echo(f"dispatched {count} due messages")


@app.command()
def status(json_out: JsonFlag = False) -> None:
    """Readiness (database, broker, beat), heartbeats, messages by status, what is due and
    how late, halts and open alerts: the facts /readyz and the ops page show."""
    with services() as built:
        ready = readiness.check(built)
        with built.db.session() as session:
            found = queries.backlog(session, built.clock.now())
            waiting = alerts.open_counts(session).by_severity
        stopped = {
            channel: {"provider": h.provider, "code": h.code, "reason": h.reason}
            for channel, h in halts.halted(built.db).items()
        }
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "ready": ready.ready,
                    "database": ready.database,
                    "broker": ready.broker,
                    "beat": ready.beat,
                    "heartbeat_ages": {
                        f"{kind.value}:{name}": round(age, 1)
                        for (kind, name), age in sorted(ready.ages.items())
                    },
                    "by_status": found.by_status,
                    "due_now": found.due_now,
                    "oldest_due_seconds": found.oldest_due_seconds,
                    "unknown_for_staff": found.unknown_for_staff,
                    "halted": stopped,
                    "alerts_open": waiting,
                }
            )
        )
    else:
        _print_readiness(ready)
        _print_backlog(found, stopped, waiting)


def _print_readiness(ready: readiness.Readiness) -> None:
    typer.echo("READY" if ready.ready else "NOT READY: " + "; ".join(ready.reasons()))
    typer.echo(f"database: {ready.database}, broker: {ready.broker}, beat: {ready.beat}")
    for (kind, name), age in sorted(ready.ages.items()):
        typer.echo(f"  {kind.value:<6} {name:<14} last seen {readiness.describe_age(age)}")


def _print_backlog(
    found: queries.Backlog, stopped: dict[str, dict[str, str]], waiting: dict[str, int]
) -> None:
    for key, count in sorted(found.by_status.items()):
        typer.echo(f"{key:<12} {count}")
    typer.echo(f"due now: {found.due_now}, oldest waiting {found.oldest_due_seconds:.0f}s")
    unknown = found.by_status.get("unknown", 0)
    if unknown:
        typer.echo(
            f"unknown: {unknown - found.unknown_for_staff} being reconciled with the provider, "
            f"{found.unknown_for_staff} left for staff (campaigns requeue --unknown)"
        )
    for channel, why in sorted(stopped.items()):
        typer.echo(
            f"HALTED {channel}: {why['provider']} error {why['code']} ({why['reason']}); "
            f"fix it, then: campaigns resume-channel {channel}"
        )
    if any(waiting.values()):
        counts = ", ".join(f"{count} {severity}" for severity, count in waiting.items() if count)
        typer.echo(f"ALERTS waiting for staff: {counts} (staff UI: /staff/alerts)")


@app.command()
def health(
    role: Annotated[str, typer.Argument(help="worker or beat")],
    max_age: Annotated[
        float, typer.Option(help="Seconds since the process last said it was well.")
    ] = 60.0,
) -> None:
    """The container healthcheck of a worker or beat: exits 1 when the process has not
    touched its liveness file lately (it is stuck or gone). Reads only the file."""
    from workers import liveness

    if role not in {"worker", "beat"}:
        fail("health: the role is worker or beat")
    alive = liveness.File(get_settings().health_dir, role)
    age = alive.age()
    if age is None:
        typer.echo(
            f"{role}: unhealthy (no liveness file {alive.path}: not started yet, or another "
            "CAMPAIGNS_HEALTH_DIR)",
            err=True,
        )
        raise typer.Exit(1)
    if age > max_age:
        typer.echo(
            f"{role}: unhealthy (last well {readiness.describe_age(age)}, over {max_age:g} s)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"{role}: well {readiness.describe_age(age)}")


@app.command()
def requeue(
    message_ids: Annotated[
        list[int] | None, typer.Argument(help="Message ids to send again.")
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Every failed message (not unknown ones).")
    ] = False,
    unknown: Annotated[
        bool,
        typer.Option(
            "--unknown",
            help="Unknown sends that reconciliation with the provider could not settle.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also unknown sends not yet reconciled: they may have reached the patient, "
            "who would then get them twice.",
        ),
    ] = False,
) -> None:
    """Put failed messages (and, asked for, unknown ones) back in the queue; all or none."""
    from campaigns import delivery

    ids = list(message_ids or [])
    if not ids and not all_failed and not unknown:
        fail("give message ids, --all-failed or --unknown")
    if force and not ids and not unknown:
        fail("--force goes with --unknown or with message ids")
    if force:
        typer.echo(
            "warning: --force requeues unknown sends the provider has not been asked about; "
            "a patient may receive such a message twice",
            err=True,
        )
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with services() as built:
        now = built.clock.now()
        done = len(delivery.requeue(built.db, ids, now, actor="cli", unknown=unknown, force=force))
        kinds = [False] * all_failed + [True] * (unknown and not ids)  # failed, then unknown
        for of_unknown in kinds:
            # Pages of 1,000 until none is left: a running count on stderr while it works.
            columns = (SpinnerColumn(), TextColumn("requeued {task.completed}"))
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("requeue", total=None)
                done += delivery.requeue_all(
                    built.db,
                    now,
                    actor="cli",
                    unknown=of_unknown,
                    force=force,
                    progress=_counter(bar, task),
                )
        typer.echo(f"requeued {done} messages")
        if unknown and not force:
            left = delivery.unknown_left(built.db)
            if left:
                typer.echo(
                    f"{left} unknown sends are still being reconciled with their provider "
                    "and were left alone"
                )


def _counter(bar: Any, task: Any) -> Callable[[int], None]:
    """A progress callback that shows the running total on a Rich progress bar."""
    return lambda n: bar.update(task, completed=n)


@app.command()
def failed(json_out: JsonFlag = False) -> None:
    """The messages `requeue` takes: failed ones, and unknown ones (the provider could not
    say whether they went), newest first, with why and the provider's error code."""
    from campaigns import queries
    from campaigns.rules.vocabulary import MessageStatus

    with services() as built, built.db.session() as session:
        found: list[queries.NotGone] = []
        for status in (MessageStatus.FAILED, MessageStatus.UNKNOWN):
            before: int | None = None
            while page := queries.not_gone(session, status, before=before, limit=1000):
                found += page
                before = page[-1].id
    found.sort(key=lambda row: row.id, reverse=True)
    if json_out:
        typer.echo(json.dumps([row.as_json() for row in found], indent=2))
        return
    if not found:
        typer.echo("no failed or unknown messages")
        return
    typer.echo(
        f"{'id':>10}  {'channel':7} {'status':8} {'error':12} {'last change (UTC)':17}  step / why"
    )
    for row in found:
        typer.echo(
            f"{row.id:>10}  {row.channel:7} {row.status:8} {(row.error_code or '-'):12} "
            f"{row.updated_at.strftime('%Y-%m-%d %H:%M'):17}  {row.step} / "
            f"{(row.reason or '-').replace('_', ' ')}"
        )
    typer.echo(
        "send failed ones again with: campaigns requeue ID...; unknown ones may have gone "
        "(check the provider first): campaigns requeue --unknown"
    )


@app.command()
def sandbox(
    twilio_port: Annotated[int, typer.Option(help="Port for the Twilio stand-in.")] = 4010,
    sendgrid_port: Annotated[int, typer.Option(help="Port for the SendGrid stand-in.")] = 4011,
    latency_ms: Annotated[int, typer.Option(help="Delay added to every API call.")] = 0,
    events_url: Annotated[str, typer.Option(help="Where SendGrid events go.")] = "",
    email_activity: Annotated[
        bool,
        typer.Option(
            "--email-activity/--no-email-activity",
            help="Answer SendGrid's Email Activity lookups (off: an account without the add-on).",
        ),
    ] = True,
) -> None:
    """Run local Twilio- and SendGrid-compatible servers (no accounts needed).

    Faults are injected over HTTP on either server: PUT /_sandbox/faults with JSON
    {"status", "delay", "accept", "count", "fraction"} (see campaigns/sandbox/common.py)."""
    import time as time_module

    from campaigns.sandbox.sendgrid_server import SendGridSandbox
    from campaigns.sandbox.twilio_server import TwilioSandbox

    settings = get_settings()
    latency = latency_ms / 1000
    twilio = TwilioSandbox(twilio_port, latency=latency)
    sendgrid = SendGridSandbox(
        sendgrid_port,
        latency=latency,
        events_url=events_url or settings.public_url.rstrip("/") + "/webhooks/sendgrid/events",
        activity=email_activity,
    )
    twilio.start()
    sendgrid.start()
    _print_sandbox_settings(twilio.url, sendgrid.url, email_activity=email_activity)
    try:
        while True:
            time_module.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        twilio.stop()
        sendgrid.stop()


def _print_sandbox_settings(twilio: str, sendgrid: str, *, email_activity: bool) -> None:
    """The settings that point the service at the sandboxes, ready to paste."""
    from campaigns.sandbox.credentials import TEST_ACCOUNT_SID, TEST_API_KEY, TEST_AUTH_TOKEN
    from campaigns.sandbox.sendgrid_server import TEST_PUBLIC_KEY

    typer.echo(
        f"Twilio sandbox on {twilio}, SendGrid sandbox on {sendgrid}. "
        "Point the service at them with:"
    )
    typer.echo(
        f"  CAMPAIGNS_SMS_PROVIDER=twilio TWILIO_ACCOUNT_SID={TEST_ACCOUNT_SID} "
        f"TWILIO_AUTH_TOKEN={TEST_AUTH_TOKEN} TWILIO_FROM=+15005550006 "
        f"TWILIO_API_BASE_URL={twilio}"
    )
    typer.echo(
        f"  CAMPAIGNS_EMAIL_PROVIDER=sendgrid SENDGRID_API_KEY={TEST_API_KEY} "
        f"SENDGRID_API_HOST={sendgrid} SENDGRID_FROM=hello@santi.example "
        f"SENDGRID_EVENT_PUBLIC_KEY={TEST_PUBLIC_KEY}"
    )
    typer.echo(
        f"Inject faults with PUT {twilio}/_sandbox/faults (or {sendgrid}/_sandbox/faults)"
        + ("" if email_activity else "; SendGrid answers Email Activity lookups 403")
    )


@app.command("send-test")
def send_test(
    sms: Annotated[str, typer.Option("--sms", help="Mobile number to text.")] = "",
    email: Annotated[str, typer.Option("--email", help="Address to email.")] = "",
) -> None:
    """Send one test message through the configured provider and say what happened."""
    from campaigns.rules.contacts import normalise_email, normalise_phone
    from campaigns.rules.ports import OutgoingEmail, OutgoingSms, ProviderError

    if bool(sms) == bool(email):
        fail("give exactly one of --sms or --email")
    with services() as built:
        clinic = built.settings.clinic_short_name
        text = f"{clinic}: a test message from our patient messaging service. No reply needed."
        try:
            if sms:
                # E.164 as given (providers' test numbers are not mobiles), else normalised.
                number = (
                    sms
                    if re.fullmatch(r"\+\d{8,15}", sms)
                    else normalise_phone(sms, built.settings.phone_region)
                )
                receipt = built.sms.send_sms(OutgoingSms(0, number, text))
            else:
                receipt = built.email.send_email(
                    OutgoingEmail(
                        0,
                        normalise_email(email),
                        f"{clinic} test message",
                        f"<p>{text}</p>",
                        text,
                        "test",
                        built.settings.public_url,
                    )
                )
        except ProviderError as error:
            typer.echo(f"{type(error).__name__}: {error.code} {error.detail}".rstrip())
            raise typer.Exit(1) from None
        typer.echo(f"sent by {receipt.provider}: {receipt.provider_id}")


@app.command()
def retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; change nothing.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Delete sent, cancelled and skipped messages older than CAMPAIGNS_RETENTION_DAYS (what
    the daily `retention` job does), with their provider events."""
    from campaigns import periodic, retention

    with services() as built:
        settings, now = built.settings, built.clock.now()
        if dry_run:
            done = retention.prune(built.db, now, settings.retention_days, dry_run=True)
        else:
            with periodic.exclusive(built.db, "retention") as alone:
                if not alone:
                    fail("the retention job is running now; try again when it has finished", 1)
                done = retention.prune(built.db, now, settings.retention_days, actor=CLI_ACTOR)
    if json_out:
        typer.echo(json.dumps(done.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"retention ({settings.retention_days} days): {verb} {done.messages} messages and "
        f"{done.provider_events} provider events last changed before {done.cutoff.isoformat()}"
        + ("" if dry_run else f" ({done.batches} batches)")
    )


@app.command("resume-channel")
def resume_channel(channel: Annotated[str, typer.Argument(help="sms or email")]) -> None:
    """Let a halted channel send again, once its provider problem is fixed."""
    from campaigns.rules.vocabulary import Channel

    try:
        chosen = Channel(channel)
    except ValueError:
        fail(f"channel: {channel!r} is not sms or email")
        return
    with services() as built:
        resumed = halts.resume(built.db, chosen, built.clock.now(), actor="cli")
        typer.echo(f"{chosen.value}: resumed" if resumed else f"{chosen.value} was not halted")


def _lifecycle(action: Callable[[Enrollments], Any], message: str) -> None:
    with services() as built:
        result = action(built.enrollments)
        typer.echo(message.format(result=result if not isinstance(result, list) else len(result)))


@app.command("change-edd")
def change_edd(
    enrollment: int,
    edd: Annotated[str, typer.Option()],
    edd_source: Annotated[str, typer.Option()] = "scan",
) -> None:
    """Record a new due date (e.g. after the dating scan) and re-plan."""

    def run(lifecycle: Enrollments) -> Any:
        source = parse_edd_source(edd_source)
        return lifecycle.change_edd(enrollment, parse_date(edd, "edd"), source, actor="cli")

    _lifecycle(run, "due date changed; {result} sends in the new plan")


@app.command()
def birth(enrollment: int, date_: Annotated[str, typer.Option("--date")]) -> None:
    """Record the birth: pregnancy steps stop, after-birth steps are planned."""
    _lifecycle(
        lambda lifecycle: lifecycle.record_birth(
            enrollment, parse_date(date_, "birth_date"), actor="cli"
        ),
        "birth recorded; {result} sends in the new plan",
    )


@app.command()
def loss(enrollment: int) -> None:
    """Record a pregnancy loss: every message stops now and never restarts automatically."""
    _lifecycle(
        lambda lifecycle: lifecycle.record_loss(enrollment, actor="cli"),
        "loss recorded; {result} pending messages cancelled",
    )


@app.command()
def pause(enrollment: int) -> None:
    """Pause an enrollment's messages."""
    _lifecycle(
        lambda lifecycle: lifecycle.pause(enrollment, actor="cli"),
        "paused; {result} pending messages cancelled",
    )


@app.command()
def resume(enrollment: int) -> None:
    """Resume a paused enrollment, planning again from now."""
    _lifecycle(
        lambda lifecycle: lifecycle.resume(enrollment, actor="cli"),
        "resumed; {result} sends in the new plan",
    )


@app.command()
def demo(
    seed: Annotated[
        bool,
        typer.Option(
            "--seed", help="Enrol the demo patients into the configured database instead."
        ),
    ] = False,
    start: Annotated[str, typer.Option(help="Simulation start date (default today).")] = "",
) -> None:
    """Simulate the whole programme for sample patients on a moving clock and print it."""
    from campaigns import demo as demo_module

    if seed:
        with services() as built:
            added = demo_module.seed(built)
            typer.echo(
                f"demo patients: {added} enrolled" if added else "demo patients: already enrolled"
            )
            admin, password = demo_module.seed_admin(built)
            if password:
                typer.echo(f"Sign in as {admin} with the password {password} (shown only now)")
            else:
                typer.echo(
                    f"Sign in as {admin} (forgotten the password? "
                    f"campaigns users reset-password {admin})"
                )
        return
    start_day = parse_date(start, "start") if start else None
    try:
        demo_module.simulate(get_settings(), start_day, echo=typer.echo)
    except InputError as exc:
        fail(str(exc))


patient_app = typer.Typer(
    no_args_is_help=True, help="A patient's data protection rights: subject access, erasure."
)
app.add_typer(patient_app, name="patient")


@patient_app.command("export")
def patient_export(patient_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Print everything held about the patient as JSON (subject access request); audited."""
    from campaigns import subject_rights

    with services() as built:
        document = subject_rights.export(built.db, patient_id, built.clock.now(), actor=CLI_ACTOR)
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@patient_app.command("erase")
def patient_erase(
    patient_id: Annotated[int, typer.Argument(metavar="ID")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase without asking (scripts); cannot be undone.")
    ] = False,
) -> None:
    """Erase the patient's contact details and texts and stop every message to her (right to
    erasure); the consent ledger and audit stay, anonymised. Cannot be undone."""
    from campaigns import subject_rights

    with services() as built:
        # An unknown id is refused before anything is asked.
        subject_rights.require_patient(built.db, patient_id)
        if not yes and not typer.confirm(
            f"Erase patient {patient_id}'s contact details and texts and stop every message "
            "to her? This cannot be undone",
            default=False,
        ):
            fail("not erased", 1)
        done = subject_rights.erase(built.db, patient_id, built.clock.now(), actor=CLI_ACTOR)
    scrubbed = ", ".join(f"{count} {table}" for table, count in done.scrubbed.items() if count)
    what = "was already erased; checked again" if done.already else "erased"
    typer.echo(
        f"patient {done.patient_id} {what}: "
        f"{done.cancelled} sends cancelled, {done.enrollments_ended} enrollments ended, "
        f"suppressed: {', '.join(done.suppressed) or 'nothing'}; scrubbed: {scrubbed or 'nothing'}"
    )
    if done.in_flight:
        typer.echo(
            f"{len(done.in_flight)} sends were already with a provider and may still arrive: "
            f"{', '.join(str(i) for i in done.in_flight)}"
        )


users_app = typer.Typer(no_args_is_help=True, help="Staff accounts: who may sign in, and how.")
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="Their email address (how they sign in).")],
    role: Annotated[str, typer.Option(help="viewer, clinician, operator or admin.")],
    name: Annotated[str, typer.Option(help="Their name, as staff see it.")] = "",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read their password from standard input; without it a one-time password "
            "is printed, to be changed at the first sign-in.",
        ),
    ] = False,
) -> None:
    """Add a staff account."""
    import sys

    from campaigns import staff_accounts

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with services() as built:
        added, one_time = staff_accounts.add(
            built.db, email, role, built.clock.now(), actor=CLI_ACTOR, name=name, password=password
        )
    typer.echo(f"added {added.email} ({added.role.value})")
    if one_time:
        typer.echo(f"one-time password (changed at the first sign-in): {one_time}")


@users_app.command("list")
def users_list(json_out: JsonFlag = False) -> None:
    """Every staff account, its role and its second factors."""
    from campaigns import staff_accounts

    with services() as built:
        found = staff_accounts.list_all(built.db)
    rows = [
        {
            "email": u.email,
            "name": u.display_name,
            "role": u.role.value,
            "totp": u.has_totp,
            "passkeys": u.passkeys,
            "disabled": u.disabled_at is not None,
            "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
        }
        for u in found
    ]
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        factors = ", ".join(
            f
            for f, on in (("app", row["totp"]), (f"{row['passkeys']} keys", row["passkeys"]))
            if on
        )
        typer.echo(
            f"{row['email']:<40} {row['role']:<10} {factors or 'no second factor':<20}"
            f"{' DISABLED' if row['disabled'] else ''}"
        )


def _user_change(action: Callable[[Services, datetime], str]) -> None:
    with services() as built:
        typer.echo(action(built, built.clock.now()))


@users_app.command("disable")
def users_disable(email: Annotated[str, typer.Argument()]) -> None:
    """Stop an account signing in; its sessions end at once."""
    from campaigns import staff_accounts

    _user_change(
        lambda b, now: (
            f"{staff_accounts.disable(b.db, email, now, actor=CLI_ACTOR).email} "
            "disabled; signed out everywhere"
        )
    )


@users_app.command("enable")
def users_enable(email: Annotated[str, typer.Argument()]) -> None:
    """Let a disabled account sign in again."""
    from campaigns import staff_accounts

    _user_change(
        lambda b, now: f"{staff_accounts.enable(b.db, email, now, actor=CLI_ACTOR).email} enabled"
    )


@users_app.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Argument(help="viewer, clinician, operator or admin.")],
) -> None:
    """Change an account's role; it signs in again."""
    from campaigns import staff_accounts

    def change(b: Services, now: datetime) -> str:
        changed = staff_accounts.set_role(b.db, email, role, now, actor=CLI_ACTOR)
        return f"{changed.email} is now {changed.role.value}"

    _user_change(change)


@users_app.command("reset-password")
def users_reset_password(email: Annotated[str, typer.Argument()]) -> None:
    """Print a new one-time password (changed at the next sign-in); sessions end."""
    from campaigns import staff_accounts

    def reset(b: Services, now: datetime) -> str:
        one_time = staff_accounts.reset_password(b.db, email, now, actor=CLI_ACTOR)
        return f"one-time password (changed at the next sign-in): {one_time}"

    _user_change(reset)


@users_app.command("totp")
def users_totp(email: Annotated[str, typer.Argument()]) -> None:
    """Enrol an authenticator app: prints the otpauth URI (and key) and recovery codes."""
    from campaigns import staff_accounts

    def enroll(b: Services, now: datetime) -> str:
        done = staff_accounts.enroll_totp(b.db, b.totp_box, email, now, actor=CLI_ACTOR)
        codes = "\n".join(f"  {code}" for code in done.recovery_codes)
        return (
            f"otpauth URI (scan or paste into the app): {done.uri}\n"
            f"key: {done.secret}\nrecovery codes (each works once; shown only now):\n{codes}"
        )

    _user_change(enroll)


@users_app.command("reset-2fa")
def users_reset_2fa(email: Annotated[str, typer.Argument()]) -> None:
    """Remove the authenticator app, security keys and recovery codes (a lost phone)."""
    from campaigns import staff_accounts

    _user_change(
        lambda b, now: (
            f"{staff_accounts.reset_2fa(b.db, email, now, actor=CLI_ACTOR).email}: "
            "second factor removed; they set up a new one at the next sign-in where their "
            "role needs one"
        )
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="A reply as a patient might write it.")],
    lang: Annotated[
        str, typer.Option("--lang", help="The patient's language (the answers' language).")
    ] = "en",
    opted_out: Annotated[
        bool, typer.Option("--opted-out", help="As from someone who has opted out.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """How a reply is read (every language's word lists), and the answer that would be sent."""
    settings = get_settings()
    try:
        reader = load_reader(settings.templates_dir / "_keywords")
    except LexiconError as exc:
        fail(str(exc))
    if lang not in reader.languages:
        fail(f"--lang: no word list for {lang!r} (have: {', '.join(sorted(reader.languages))})")
    renderer = ContentRenderer(settings.templates_dir, clinic_from(settings))
    found = keywords.classify(text, reader, opted_out=opted_out)
    decision = decide(found, Situation(known=True, opted_out=opted_out))
    example_link = f"{settings.public_url.rstrip('/')}/b/<signed-link>"
    rendered = [renderer.render_reply(key, lang, link=example_link) for key in decision.replies]
    # How each answer will travel: English must fit one GSM-7 segment; a reviewed translation
    # may need UCS-2 and more than one, which is counted and shown.
    segments = [
        {
            "language": r.language,
            "encoding": r.encoding.encoding,
            "units": r.encoding.units,
            "segments": r.encoding.segments,
        }
        for r in rendered
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    **found.as_dict(),
                    "replies": [r.body for r in rendered],
                    "segments": segments,
                    "actions": [a.value for a in decision.actions],
                    "alert": decision.alert.severity.value if decision.alert else None,
                    "alert_kind": decision.alert.kind if decision.alert else None,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    _print_reading(found, decision, [r.body for r in rendered], segments)


def _print_reading(
    found: Classification, decision: Decision, replies: list[str], segments: list[dict[str, Any]]
) -> None:
    typer.echo(f"intent:  {found.intent.value}")
    typer.echo(f"tier:    {found.tier.value}")
    typer.echo(f"read as: {found.language}")
    for match in found.matches:
        typer.echo(f"matched: {match.intent.value} ({match.reply}): {', '.join(match.words)}")
    if not found.matches:
        typer.echo("matched: nothing")
    for match in found.set_aside:
        typer.echo(f"set aside (negated or gone): {match.intent.value}: {', '.join(match.words)}")
    actions = ", ".join(a.value for a in decision.actions) or "none"
    typer.echo(f"actions: {actions}")
    if decision.alert:
        typer.echo(f"alert:   {decision.alert.severity.value} ({decision.alert.kind})")
    for reply, shape in zip(replies, segments, strict=True):
        typer.echo(
            f"reply:   {reply}  [{shape['language']}, {shape['encoding']}, "
            f"{shape['units']} units, {shape['segments']} segment(s)]"
        )
    if not replies:
        typer.echo("reply:   (no reply)")


if __name__ == "__main__":  # pragma: no cover
    main()


def _add_content_commands() -> None:
    # Its own module: the commands import this one's `services` when they run.
    from campaigns.content_cli import content_app

    app.add_typer(content_app, name="content")


_add_content_commands()
