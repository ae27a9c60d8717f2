"""The `campaigns` command as operators run it: one process per command, settings from the env."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest

from campaigns import halts, heartbeats
from campaigns.alerts import raise_alert
from campaigns.rules.pregnancy import edd_for
from campaigns.rules.replies import AlertSpec, Severity
from campaigns.rules.vocabulary import Channel
from campaigns.storage.db import Database
from tests.conftest import REDIS_URL
from tests.integration.processes import (
    ROOT,
    Spawned,
    campaigns,
    compose_command,
    env_with,
    free_port,
    spawn,
    stop,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = env_with(
        CAMPAIGNS_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        CAMPAIGNS_SEND_WINDOW="Mon-Sun 00:00-24:00",
        CAMPAIGNS_HOLIDAY_REGION="none",
    )
    migrated = campaigns("migrate", env=environment)
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stdout
    return environment


def counts(env: dict[str, str]) -> dict[str, int]:
    path = env["CAMPAIGNS_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return {
            t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "patients",
                "consent_events",
                "enrollments",
                "scheduled_messages",
                "audit_events",
            )
        }


def edd(weeks: int) -> str:
    return edd_for(date.today(), weeks).isoformat()  # noqa: DTZ011 - the CLI reads local dates


GOOD = [
    "--name",
    "Cara Jones",
    "--phone",
    "07400 123456",
    "--email",
    "cara@example.com",
    "--edd-source",
    "scan",
    "--tz",
    "Europe/London",
    "--channels",
    "sms,email",
    "--consent",
    "programme,marketing_sms",
]


def test_enroll_then_timeline_then_dispatch_then_status(env: dict[str, str]) -> None:
    enrolled = campaigns("enroll", *GOOD, "--edd", edd(33), env=env)
    assert enrolled.returncode == 0, enrolled.stderr
    assert enrolled.stdout.startswith("enrolled patient 1 (enrollment 1)")
    entries = json.loads(campaigns("timeline", "+447400123456", "--json", env=env).stdout)
    welcome = [e for e in entries if e["step"] == "welcome"]
    assert {e["status"] for e in welcome} == {"pending"}
    assert any(e["reason"] == "catch_up" for e in entries)
    assert any(e["status"] == "skipped" for e in entries)
    dispatched = campaigns("dispatch", "--once", env=env)
    assert dispatched.returncode == 0, dispatched.stderr
    assert dispatched.stdout.strip() == "dispatched 2 due messages"
    after = json.loads(campaigns("timeline", "1", "--json", env=env).stdout)
    assert {e["status"] for e in after if e["step"] == "welcome"} == {"sent"}
    table = campaigns("timeline", "07400123456", env=env).stdout
    assert "sent" in table and "welcome" in table
    status = json.loads(campaigns("status", "--json", env=env).stdout)
    assert status["by_status"]["sent"] == 2 and status["due_now"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--phone": "12345"}, "error: phone: "),
        ({"--phone": "020 7946 0000"}, "error: phone: 020*******000 is not a mobile number"),
        ({"--email": "cara@"}, "error: email: "),
        ({"--tz": "Europe/Londn"}, "error: tz: unknown timezone 'Europe/Londn'"),
        ({"--edd": "2099-01-01"}, "error: edd: 2099-01-01 is more than 44 weeks after today"),
        ({"--edd": "2020-01-01"}, "past 42 weeks"),
        ({"--consent": "marketing_sms"}, "error: consent: the patient must agree"),
        ({"--edd-source": "guess"}, "error: edd_source: 'guess' is not one of"),
    ],
)
def test_bad_input_exits_non_zero_names_the_field_and_writes_nothing(
    env: dict[str, str], change: dict[str, str], message: str
) -> None:
    args = [*GOOD, "--edd", edd(20)]
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    before = counts(env)
    result = campaigns("enroll", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert counts(env) == before
    assert "cara@example.com" not in result.stderr and "7400 123456" not in result.stderr


def test_missing_consent_option_is_refused(env: dict[str, str]) -> None:
    args = [*GOOD, "--edd", edd(20)]
    position = args.index("--consent")
    del args[position : position + 2]
    result = campaigns("enroll", *args, env=env)
    assert result.returncode == 2 and "--consent" in result.stderr
    assert counts(env)["patients"] == 0


def test_preview_json_lists_every_send_with_its_text(env: dict[str, str]) -> None:
    result = campaigns(
        "preview",
        "leg-cramps",
        "--edd",
        "2027-03-01",
        "--tz",
        "America/New_York",
        "--enrolled",
        "2026-07-01",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert {"step", "channel", "kind", "status", "due_local", "due_utc", "text"} <= set(entries[0])
    for entry in entries:
        local, utc = (
            datetime.fromisoformat(entry["due_local"]),
            datetime.fromisoformat(entry["due_utc"]),
        )
        assert local == utc and local.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
        assert entry["text"]
    sms = {e["step"]: e for e in entries if e["channel"] == "sms"}
    assert sms["welcome"]["text"].startswith("Santi:")
    assert sms["clot-warning-signs"]["kind"] == "safety"
    assert sms["physio-offer"]["status"] == "skipped"
    human = campaigns("preview", "leg-cramps", "--edd", "2027-03-01", env=env)
    assert "clot-warning-signs" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "leg-cramps", "--edd", "soon"], "error: edd: 'soon' is not a date"),
        (["preview", "no-such", "--edd", "2027-03-01"], "error: campaign: unknown campaign"),
        (["preview", "leg-cramps", "--edd", "2027-03-01", "--tz", "Nowhere"], "error: tz:"),
        (["timeline", "+447400999999"], "error: no patient +44*******999"),
    ],
)
def test_other_commands_explain_bad_input(
    env: dict[str, str], args: list[str], message: str
) -> None:
    result = campaigns(*args, env=env)
    assert result.returncode in (1, 2)
    assert message in result.stderr


def test_every_command_reads_the_same_database_setting(env: dict[str, str], tmp_path: Path) -> None:
    other = {**env, "CAMPAIGNS_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    assert campaigns("migrate", env=other).returncode == 0
    assert campaigns("enroll", *GOOD, "--edd", edd(20), env=other).returncode == 0
    assert counts(other)["patients"] == 1
    assert counts(env)["patients"] == 0


def test_a_broken_campaign_definition_stops_the_service_with_its_location(
    env: dict[str, str], tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    definition = templates / "leg-cramps" / "campaign.yaml"
    definition.write_text(definition.read_text().replace("anchor: birth", "anchor: brith", 1))
    result = campaigns("status", env={**env, "CAMPAIGNS_TEMPLATES_DIR": str(templates)})
    assert result.returncode == 2
    assert str(definition) in result.stderr
    assert "step 'after-birth-safety' (steps[14]), field 'anchor'" in result.stderr
    assert "'brith'" in result.stderr


def test_demo_runs_the_whole_programme_on_its_own_clock_without_services(
    env: dict[str, str],
) -> None:
    # The demo moves its own clock through the programme and never waits on the real one, so
    # it ends in seconds; the timeout only guards against a hang.
    result = campaigns(
        "demo",
        "--start",
        "2026-03-02",
        env={k: v for k, v in env.items() if k != "CAMPAIGNS_DATABASE_URL"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for marker in (
        "SKIPPED (before_enrolment)",
        "CATCH-UP clot-and-breathing-signs",
        "CANCELLED (edd_changed)",
        "CANCELLED (pregnancy_loss)",
        "BIRTH recorded",
        "PAUSED: past 42 weeks",
        "PROGRAMME COMPLETE",
        "day 7 after birth",
        "EDT",
        "BST",
        "GMT",
    ):
        assert marker in out, marker
    esme = [line for line in out.splitlines() if " Esme " in line]
    after_loss = esme[next(i for i, line in enumerate(esme) if "LOSS" in line) + 1 :]
    assert not [line for line in after_loss if " SMS " in line or " EMAIL " in line]
    assert "Esme Novak    enrollment ended_loss" in out
    sms_lines = [line for line in out.splitlines() if " SMS " in line]
    assert len(sms_lines) > 40
    assert all('"Santi: ' in line for line in sms_lines)


def test_demo_seed_enrolls_the_sample_patients_once(env: dict[str, str]) -> None:
    first = campaigns("demo", "--seed", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "demo patients: 5 enrolled"
    again = campaigns("demo", "--seed", env=env)
    assert again.stdout.splitlines()[0] == "demo patients: already enrolled"
    assert counts(env)["patients"] == 5


def _serve_as_compose(service: str, env: dict[str, str], tmp_path: Path) -> tuple[int, Spawned]:
    argv = compose_command(service)
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    server = spawn(argv, {**env, "CAMPAIGNS_BROKER_URL": REDIS_URL}, tmp_path / f"{service}.log")
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return port, server
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{service} did not start"
            time.sleep(0.2)


def test_serve_as_compose_runs_it_parts_apart(env: dict[str, str], tmp_path: Path) -> None:
    """The public listener answers providers and patients, never staff pages; the staff one
    answers readiness and the sign-in page, never webhooks."""
    web_port, web = _serve_as_compose("web", env, tmp_path)
    staff_port, staff = _serve_as_compose("staff", env, tmp_path)
    try:
        assert "--workers" in compose_command("web")  # several processes need a broker
        public = f"http://127.0.0.1:{web_port}"
        assert httpx.get(f"{public}/staff/login").status_code == 404
        assert httpx.get(f"{public}/staff/").status_code == 404
        assert httpx.get(f"{public}/metrics").status_code == 404
        assert httpx.get(f"{public}/u/not-a-token").status_code == 400
        internal = f"http://127.0.0.1:{staff_port}"
        silent = httpx.get(f"{internal}/readyz")  # no beat runs here
        assert silent.status_code == 503 and silent.json()["beat"] == "never ticked"
        assert silent.json()["database"] == "ok" and silent.json()["broker"] == "ok"
        database = Database.from_url(env["CAMPAIGNS_DATABASE_URL"])
        heartbeats.seen(database, heartbeats.Kind.BEAT, ["beat"], datetime.now(UTC), "test")
        database.dispose()
        assert httpx.get(f"{internal}/readyz").status_code == 200
        assert httpx.get(f"{internal}/staff/login").status_code == 200
        assert httpx.post(f"{internal}/webhooks/twilio/sms", data={}).status_code == 404
        assert httpx.get(f"{internal}/b/anything").status_code == 404
    finally:
        web_output, staff_output = stop(web), stop(staff)
    assert "Staff UI" not in web_output
    assert f"Staff UI: http://127.0.0.1:{staff_port}/staff/" in staff_output


def test_serve_refuses_the_development_secret_beyond_loopback(env: dict[str, str]) -> None:
    result = campaigns("serve", "--host", "0.0.0.0", env=env)
    assert result.returncode == 2
    assert "--host 0.0.0.0" in result.stderr and "CAMPAIGNS_SECRET_KEY" in result.stderr


def test_serve_refuses_several_web_processes_without_a_broker(env: dict[str, str]) -> None:
    result = campaigns("serve", "--workers", "2", env=env)
    assert result.returncode == 2
    assert "--workers" in result.stderr and "CAMPAIGNS_BROKER_URL" in result.stderr


def test_classify_prints_the_reading_and_the_answer(env: dict[str, str]) -> None:
    shown = campaigns("classify", "my calf is red n hot, can I book?", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "intent:  leg" in shown.stdout and "tier:    amber" in shown.stdout
    assert "matched: leg (leg): calf + red, calf + hot" in shown.stdout
    assert "matched: book (book): i book" in shown.stdout
    assert re.search(r"\[en, GSM-7, 1[0-6]\d units, 1 segment\(s\)\]", shown.stdout)
    assert "maternity unit, GP or 111 today" in shown.stdout and "/b/" not in shown.stdout
    as_json = campaigns("classify", "yes", "--opted-out", "--json", env=env)
    assert json.loads(as_json.stdout)["intent"] == "resubscribe"
    # Every language is read; the JSON keeps its shape and shows which way a loss went.
    loss = json.loads(campaigns("classify", "poroniłam", "--lang", "pl", "--json", env=env).stdout)
    assert {"intent", "tier", "actions", "replies", "alert", "segments"} <= set(loss)
    assert (loss["intent"], loss["language"], loss["actions"]) == (
        "loss",
        "pl",
        ["alert", "loss_hold"],
    )
    assert loss["segments"] == [
        {"language": "en", "encoding": "GSM-7", "units": 124, "segments": 1}
    ]
    mention = json.loads(
        campaigns("classify", "my sister had a stillbirth", "--json", env=env).stdout
    )
    assert (mention["intent"], mention["actions"], mention["alert"]) == (
        "loss_mention",
        ["alert"],
        "review",
    )
    unknown = campaigns("classify", "tak", "--lang", "xx", env=env)
    assert unknown.returncode == 2 and "--lang" in unknown.stderr


def test_sandbox_and_send_test_report_the_provider_id_or_the_classified_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    twilio_port, sendgrid_port = free_port(), free_port()
    sandbox = spawn(
        [
            str(ROOT / ".venv/bin/campaigns"),
            "sandbox",
            "--twilio-port",
            str(twilio_port),
            "--sendgrid-port",
            str(sendgrid_port),
        ],
        env,
        tmp_path / "sandbox.log",
    )
    try:
        log = sandbox.log_path
        deadline = time.monotonic() + 30
        while "Point the service at them" not in log.read_text():
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.2)
        # The sandbox prints the settings that point the service at it: use them as printed.
        printed = dict(
            word.split("=", 1)
            for line in log.read_text().splitlines()
            if line.startswith("  CAMPAIGNS_")
            for word in line.split()
        )
        configured = {**env, **printed}
        sent = campaigns("send-test", "--sms", "+447400000001", env=configured)
        assert sent.returncode == 0, sent.stderr
        assert re.fullmatch(r"sent by twilio: SM[0-9a-f]{32}\n", sent.stdout)
        emailed = campaigns("send-test", "--email", "cara@example.com", env=configured)
        assert emailed.returncode == 0, emailed.stderr
        assert emailed.stdout.startswith("sent by sendgrid: ")
        invalid = campaigns("send-test", "--sms", "+15005550001", env=configured)
        assert invalid.returncode == 1
        assert invalid.stdout.startswith("InvalidAddressError: 21211")
        wrong = campaigns(
            "send-test", "--sms", "+447400000001", env={**configured, "TWILIO_AUTH_TOKEN": "x" * 32}
        )
        assert wrong.returncode == 1
        assert wrong.stdout.startswith("ConfigurationError: 20003")
        neither = campaigns("send-test", env=configured)
        assert neither.returncode != 0
        assert "give exactly one of --sms or --email" in neither.stdout + neither.stderr
        recorded = httpx.get(f"http://127.0.0.1:{twilio_port}/_sandbox/messages").json()
        assert [m["form"]["To"] for m in recorded] == ["+447400000001"]
    finally:
        stop(sandbox)


def test_status_shows_a_halted_channel_until_it_is_resumed(env: dict[str, str]) -> None:
    db = Database.from_url(env["CAMPAIGNS_DATABASE_URL"])
    halts.halt(db, Channel.SMS, "twilio", "20003", "authentication failed", datetime.now(UTC))
    db.engine.dispose()
    shown = campaigns("status", env=env)
    assert "HALTED sms: twilio error 20003 (authentication failed)" in shown.stdout
    assert "campaigns resume-channel sms" in shown.stdout
    assert json.loads(campaigns("status", "--json", env=env).stdout)["halted"] == {
        "sms": {"provider": "twilio", "code": "20003", "reason": "authentication failed"}
    }
    assert campaigns("resume-channel", "sms", env=env).stdout == "sms: resumed\n"
    assert campaigns("resume-channel", "sms", env=env).stdout == "sms was not halted\n"
    assert "HALTED" not in campaigns("status", env=env).stdout
    bad = campaigns("resume-channel", "fax", env=env)
    assert bad.returncode != 0
    assert "channel: 'fax' is not sms or email" in bad.stdout + bad.stderr


def test_status_shows_alerts_waiting_for_staff(env: dict[str, str]) -> None:
    assert "ALERTS" not in campaigns("status", env=env).stdout
    db = Database.from_url(env["CAMPAIGNS_DATABASE_URL"])
    with db.session() as session:
        raise_alert(
            session,
            AlertSpec(Severity.RED, "emergency", "emergency"),
            datetime.now(UTC),
            patient_id=None,
            inbound_id=None,
            matched=["chest"],
        )
    db.engine.dispose()
    shown = campaigns("status", env=env)
    assert "ALERTS waiting for staff: 1 red" in shown.stdout
    assert json.loads(campaigns("status", "--json", env=env).stdout)["alerts_open"]["red"] == 1


def test_requeue_takes_failed_only_refuses_unknown_and_names_what_it_refuses(
    env: dict[str, str],
) -> None:
    assert campaigns("enroll", *GOOD, "--edd", edd(20), env=env).returncode == 0
    path = env["CAMPAIGNS_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        ids = [r[0] for r in connection.execute("SELECT id FROM scheduled_messages ORDER BY id")]
        assert len(ids) >= 3
        failed, unknown, reviewed = ids[:3]
        connection.execute(
            "UPDATE scheduled_messages SET status = 'failed' WHERE id = ?", (failed,)
        )
        connection.execute(
            "UPDATE scheduled_messages SET status = 'unknown', reason = 'provider_outcome_unknown'"
            " WHERE id = ?",
            (unknown,),
        )
        connection.execute(
            "UPDATE scheduled_messages SET status = 'unknown', reason = 'needs_review' "
            "WHERE id = ?",
            (reviewed,),
        )

    def status(message_id: int) -> str:
        with sqlite3.connect(path) as connection:
            return str(
                connection.execute(
                    "SELECT status FROM scheduled_messages WHERE id = ?", (message_id,)
                ).fetchone()[0]
            )

    shown = campaigns("status", env=env)
    assert "unknown: 1 being reconciled with the provider, 1 left for staff" in shown.stdout
    assert json.loads(campaigns("status", "--json", env=env).stdout)["unknown_for_staff"] == 1

    # An unknown send among the ids: refused, named, and nothing is requeued.
    refused = campaigns("requeue", str(failed), str(unknown), env=env)
    assert refused.returncode == 1
    assert f"{unknown} is unknown" in refused.stderr + refused.stdout
    assert status(failed) == "failed"
    missing = campaigns("requeue", "999999", env=env)
    assert missing.returncode == 1 and "999999 does not exist" in missing.stderr + missing.stdout
    assert campaigns("requeue", "--force", env=env).returncode == 2

    # --all-failed takes failed ones only.
    done = campaigns("requeue", "--all-failed", env=env)
    assert done.returncode == 0 and "requeued 1 messages" in done.stdout
    assert (status(failed), status(unknown), status(reviewed)) == ("pending", "unknown", "unknown")

    # --unknown takes only what reconciliation left for staff, and says what it left.
    done = campaigns("requeue", "--unknown", env=env)
    assert done.returncode == 0 and "requeued 1 messages" in done.stdout
    assert "1 unknown sends are still being reconciled" in done.stdout
    assert (status(unknown), status(reviewed)) == ("unknown", "pending")

    # --force spells out the risk, then takes the rest.
    forced = campaigns("requeue", "--unknown", "--force", env=env)
    assert forced.returncode == 0 and "requeued 1 messages" in forced.stdout
    assert "may receive such a message twice" in forced.stderr
    assert status(unknown) == "pending"
