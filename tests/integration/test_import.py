"""Importing patients from a CSV file, on SQLite and PostgreSQL: every bad row listed by line
and field in staff words, BOM and Excel quoting, nothing created twice on a re-upload, a dry
run writes nothing, all or nothing on a database error, the CLI's exit codes and progress, the
staff page's upload, preview, confirmation and progress, and who may do it."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from campaigns import importing
from campaigns.bootstrap import Services
from campaigns.rules.clock import MovableClock
from campaigns.rules.csv_file import FileError
from campaigns.rules.errors import InputError
from campaigns.storage.models import AuditEvent, Enrollment, Patient, PatientImport
from campaigns.web.app import create_app
from tests.integration.helpers import edd_at, enroll
from tests.integration.processes import ROOT, campaigns, env_with
from tests.integration.staff import sign_in

HEADER = "name,phone,email,edd,edd_source,timezone,language,channels,consents,clinic_ref\n"


def edd(services: Services, weeks: int = 20) -> str:
    return edd_at(services.clock.now().date(), weeks).isoformat()


def good_file(services: Services, count: int = 3, first: int = 0) -> str:
    due = edd(services)
    return HEADER + "".join(
        f"Patient {i},07400 9{i:05d},p{i}@example.com,{due},scan,Europe/London,en,sms,"
        f"programme,REF-{i}\n"
        for i in range(first, first + count)
    )


def counts(services: Services) -> tuple[int, int]:
    with services.db.session() as session:
        patients = session.execute(select(func.count()).select_from(Patient)).scalar_one()
        enrolled = session.execute(select(func.count()).select_from(Enrollment)).scalar_one()
    return int(patients), int(enrolled)


def run_import(services: Services, text: str | bytes) -> importing.Report:
    data = text.encode() if isinstance(text, str) else text
    now = services.clock.now()
    report = importing.check(services.db, services.intake, data, now)
    importing.enrol(services.db, services.planner, report, now, actor="test")
    return report


def test_a_good_file_is_imported_in_one_go_and_audited_once(services: Services) -> None:
    report = run_import(services, good_file(services, 3))
    assert (report.rows, len(report.good), report.bad, report.problems) == (3, 3, 0, [])
    assert counts(services) == (3, 3)
    with services.db.session() as session:
        [imported] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "patients_imported")
        ).scalars()
        refs = set(session.execute(select(Patient.clinic_ref)).scalars())
    assert imported.actor == "test"
    assert imported.detail == {"rows": 3, "imported": 3, "already": 0, "bad": 0}
    assert refs == {"REF-0", "REF-1", "REF-2"}


def test_every_problem_of_every_bad_row_is_listed_by_line_and_field(services: Services) -> None:
    due = edd(services)
    text = (
        HEADER
        + f"Good One,07400 900001,,{due},scan,Europe/London,en,sms,programme,\n"
        + f"Bad Two,07123,,{due},scan,Europe/Lndon,en,sms,programme,\n"
        + "Bad Three,07400 900003,,next week,guess,Europe/London,en,sms,,\n"
        + f"Good Four,07400 900004,,{due},scan,Europe/London,en,sms,programme,\n"
    )
    report = run_import(services, text)
    shown = [str(p) for p in report.problems]
    assert shown[0] == "line 3, Mobile number: 07123 is not a valid phone number"
    assert any(s.startswith("line 3, Time zone: ") for s in shown)
    assert "line 4, Due date: 'next week' is not a date like 2027-05-14" in shown
    assert any(s.startswith("line 4, Where the due date comes from: 'guess'") for s in shown)
    assert "line 4, Consent: the patient must agree to the programme's messages" in shown
    assert len(shown) == 5 and report.bad == 2
    for text_ in shown:  # staff words only: no keys, flags or masked values
        assert "edd" not in text_ and " tz" not in text_ and "--" not in text_
        assert "***" not in text_
    assert counts(services) == (2, 2)  # the good rows went in


def test_a_bom_excel_quoting_and_staff_words_in_the_header(services: Services) -> None:
    due = edd_at(services.clock.now().date(), 20)
    text = (
        "Full name;Mobile number;Due date;Due date source;Consent;Send tips by;Email address\r\n"
        f'"O\'Neill; ""Bea""";07400 900011;{due:%d/%m/%Y};scan;programme;"sms; email";'
        "bea@example.com\r\n"
        f'"Multi\nline";07400 900012;{due.isoformat()};lmp;programme;sms;\r\n'
        f"Third;07400 1;{due.isoformat()};lmp;programme;sms;\r\n"
    )
    report = run_import(services, b"\xef\xbb\xbf" + text.encode())
    assert [str(p) for p in report.problems] == [
        "line 5, Mobile number: 07400 1 is not a valid phone number"
    ]  # the quoted newline makes the third row start on line 5
    with services.db.session() as session:
        names = sorted(session.execute(select(Patient.name)).scalars())
        channels = sorted(session.execute(select(Enrollment.channels)).scalars())
    assert names == ["Multi\nline", 'O\'Neill; "Bea"']
    assert channels == ["email,sms", "sms"]


def test_a_file_that_cannot_be_read_says_every_reason(services: Services) -> None:
    with pytest.raises(FileError) as caught:
        importing.check(services.db, services.intake, b"nme,phone,phone\n", services.clock.now())
    problems = caught.value.problems
    assert "column 1, 'nme', is not a column we read" in problems[0]
    assert any("there is no Due date column (edd)" in p for p in problems)
    assert any("Mobile number" in p for p in problems)  # phone given twice
    with pytest.raises(FileError, match="UTF-8"):
        importing.check(services.db, services.intake, "é".encode("latin-1"), services.clock.now())


def test_a_re_upload_creates_nobody_twice_matching_phone_or_reference(
    services: Services,
) -> None:
    run_import(services, good_file(services, 3))
    # Same people: one with a new number but the same clinic reference.
    again = good_file(services, 3).replace("07400 900002", "07400 955555")
    report = run_import(services, again + good_file(services, 1, first=7)[len(HEADER) :])
    assert [(a.line, a.matched) for a in report.already] == [
        (2, "phone"),
        (3, "phone"),
        (4, "clinic_ref"),
    ]
    assert report.problems == [] and len(report.good) == 1
    assert counts(services) == (4, 4)


def test_the_same_number_twice_in_a_file_is_a_problem_on_the_later_line(
    services: Services,
) -> None:
    text = good_file(services, 2).replace("07400 900001", "07400 900000")
    report = run_import(services, text)
    assert [str(p) for p in report.problems] == [
        "line 3, Mobile number: the same number is on line 2"
    ]
    assert counts(services) == (1, 1)


def test_all_or_nothing_when_the_database_refuses_a_row(services: Services) -> None:
    report = importing.check(
        services.db, services.intake, good_file(services, 3).encode(), services.clock.now()
    )
    enroll(services, phone="07400 900001")  # taken after the check, before the import
    with pytest.raises(InputError, match="line 3: this number already belongs"):
        importing.enrol(services.db, services.planner, report, services.clock.now(), actor="test")
    assert counts(services) == (1, 1)
    with services.db.session() as session:
        audits = session.execute(
            select(AuditEvent).where(AuditEvent.action == "patients_imported")
        ).all()
    assert audits == []


# -- the command line ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_checks_imports_and_exits_by_what_it_found(tmp_path: Path) -> None:
    env = env_with(CAMPAIGNS_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}")
    assert campaigns("migrate", env=env).returncode == 0
    due = edd_at(date.today(), 20).isoformat()  # noqa: DTZ011 - the CLI reads local dates
    good = tmp_path / "good.csv"
    good.write_text(
        HEADER
        + f"Ann,07400 900001,,{due},scan,Europe/London,en,sms,programme,A1\n"
        + f"Bo,07400 900002,,{due},scan,Europe/London,en,sms,programme,A2\n"
    )
    dry = campaigns("import", str(good), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would import 2" in dry.stdout and "nothing written" in dry.stdout
    assert "Checked" in dry.stderr  # the progress bar
    path = env["CAMPAIGNS_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM patients").fetchone() == (0,)
    done = campaigns("import", str(good), env=env)
    assert done.returncode == 0, done.stderr
    assert "imported 2, 0 already enrolled, 0 with problems" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text() + f"Cy,07123,,{due},scan,Europe/London,en,sms,,\n")
    again = campaigns("import", str(bad), env=env)
    assert again.returncode == 1
    assert "line 2: already enrolled (patient 1)" in again.stdout
    assert "line 4, Mobile number: 07123 is not a valid phone number" in again.stdout
    assert "line 4, Consent: the patient must agree" in again.stdout
    unreadable = tmp_path / "x.csv"
    unreadable.write_text("who,what\n")
    refused = campaigns("import", str(unreadable), env=env)
    assert refused.returncode == 2 and "'who', is not a column we read" in refused.stderr
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM patients").fetchone() == (2,)


def test_the_example_file_in_the_docs_imports_cleanly(
    services: Services, clock: MovableClock
) -> None:
    clock.set(datetime(2026, 12, 7, 10, 0, tzinfo=UTC))  # the docs' dates are from then on
    example = (ROOT / "docs" / "examples" / "patients.csv").read_bytes()
    assert (ROOT / "campaigns" / "web" / "static" / "patients-example.csv").read_bytes() == example
    report = importing.check(services.db, services.intake, example, services.clock.now())
    assert report.problems == [] and len(report.good) == report.rows == 3


# -- the staff page --------------------------------------------------------------------------


def wait_for(client: Any, import_id: int, done: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        state: dict[str, Any] = client.get(f"/staff/import/{import_id}/progress").json()
        if state["status"] in done:
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.02)


def upload(member: Any, text: str) -> int:
    answer = member.client.post(
        "/staff/import",
        data={"csrf_token": member.csrf},
        files={"file": ("patients.csv", text.encode(), "text/csv")},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return int(answer.headers["location"].rsplit("/", 1)[1])


def test_the_page_previews_then_imports_with_progress(services: Services) -> None:
    text = good_file(services, 2) + f"Bad,07123,,{edd(services)},scan,Europe/London,en,sms,,\n"
    with TestClient(create_app(services)) as client:
        member = sign_in(client, services, "clinician")
        import_id = upload(member, text)
        state = wait_for(member, import_id, {"checked"})
        assert (state["rows"], state["checked"], state["ready"]) == (3, 3, 2)
        page = member.get(f"/staff/import/{import_id}").text
        assert "line 4, Mobile number: 07123 is not a valid phone number" in page
        assert "line 4, Consent: the patient must agree" in page
        assert "Patient 1" in page and "Import 2 patients" in page
        assert counts(services) == (0, 0)  # nothing before the confirmation
        confirmed = member.post(f"/staff/import/{import_id}/confirm", follow_redirects=False)
        assert confirmed.status_code == 303
        state = wait_for(member, import_id, {"imported", "failed"})
        assert (state["status"], state["written"]) == ("imported", 2)
        assert "Imported 2 patients" in member.get(f"/staff/import/{import_id}").text
        twice = member.post(f"/staff/import/{import_id}/confirm")
        assert "not waiting to be imported" in twice.text
    assert counts(services) == (2, 2)
    with services.db.session() as session:
        row = session.get(PatientImport, import_id)
        assert row is not None and row.content is None  # the file is not kept
        [audit] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "patients_imported")
        ).scalars()
    assert audit.actor.endswith("clinician@clinic.example")
    assert audit.detail == {"rows": 3, "imported": 2, "already": 0, "bad": 1}


def test_the_page_says_why_a_file_cannot_be_read_and_a_file_can_be_dropped(
    services: Services,
) -> None:
    with TestClient(create_app(services)) as client:
        member = sign_in(client, services, "admin")
        empty = member.client.post("/staff/import", data={"csrf_token": member.csrf})
        assert empty.status_code == 400 and "File: choose a CSV file" in empty.text
        bad = upload(member, "who,what\n1,2\n")
        assert wait_for(member, bad, {"unreadable"})["status"] == "unreadable"
        assert "is not a column we read" in member.get(f"/staff/import/{bad}").text
        good = upload(member, good_file(services, 1))
        wait_for(member, good, {"checked"})
        dropped = member.post(f"/staff/import/{good}/discard")
        assert "nothing was imported" in dropped.text
        assert member.post(f"/staff/import/{good}/confirm").status_code == 200
    assert counts(services) == (0, 0)


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("operator", False)])
def test_only_those_who_may_enrol_may_import(services: Services, role: str, allowed: bool) -> None:
    with TestClient(create_app(services)) as client:
        member = sign_in(client, services, role)
        assert member.get("/staff/import").status_code == 403
        answer = member.client.post(
            "/staff/import",
            data={"csrf_token": member.csrf},
            files={"file": ("p.csv", good_file(services, 1).encode(), "text/csv")},
        )
        assert answer.status_code == 403
        assert 'href="/staff/import"' not in member.get("/staff/").text
    assert counts(services) == (0, 0)
