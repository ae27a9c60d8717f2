"""Importing patients from a CSV file: check every row (listing every problem by line and
field), tell apart the patients already enrolled (matched on mobile number or clinic
reference), and enrol the rest in one transaction through the bulk path (COPY on PostgreSQL).

The CLI checks and imports in one go (`campaigns import`); the staff page keeps the uploaded
file in `patient_imports` between the preview and the confirmation, and runs each step in a
background thread that reports its progress (the counts in the row, and for the write itself,
which holds SQLite's write lock, in this process's memory). An import is all or nothing: a
process that dies mid-way leaves nothing written, and its row is shown as interrupted.
Nothing here logs a name, number or address.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from campaigns import audit
from campaigns.enrollments import enroll_many
from campaigns.planner import Planner
from campaigns.rules.clock import Clock
from campaigns.rules.csv_file import FileError, Good, Problem, check_rows, decode, read
from campaigns.rules.errors import InputError
from campaigns.rules.intake import IntakeRules
from campaigns.rules.vocabulary import ConsentSource
from campaigns.rules.wording import day
from campaigns.storage.db import Database
from campaigns.storage.models import Patient, PatientImport

log = logging.getLogger(__name__)
#: A check or import not heard from for this long died with its process (nothing written).
STALE = timedelta(minutes=15)
#: Uploaded files not imported are dropped after a day; reports are kept for a week.
KEEP_FILE = timedelta(days=1)
KEEP_REPORT = timedelta(days=7)
#: Rows of what will be imported shown on the preview page.
SHOWN_READY = 200
PROGRESS_EVERY = 1000


@dataclass(frozen=True)
class Already:
    line: int
    patient_id: int
    matched: str  # "phone" or "clinic_ref"


@dataclass(frozen=True)
class Report:
    rows: int
    good: list[Good]  # checked and not yet enrolled
    already: list[Already]
    problems: list[Problem]
    bad: int  # rows with at least one problem


def check(
    db: Database,
    rules: IntakeRules,
    data: bytes,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Every row checked; raises FileError when the file cannot be read at all."""
    _, rows = read(decode(data))
    checked = check_rows(rows, rules, now, progress=progress, every=PROGRESS_EVERY)
    already, good = _split_known(db, checked.good)
    total = len(checked.good) + checked.bad_lines
    return Report(total, good, already, checked.problems, checked.bad_lines)


def _split_known(db: Database, good: Sequence[Good]) -> tuple[list[Already], list[Good]]:
    phones = [g.request.phone for g in good if g.request.phone is not None]
    refs = [g.request.clinic_ref for g in good if g.request.clinic_ref is not None]
    by_phone: dict[str, int] = {}
    by_ref: dict[str, int] = {}
    with db.session() as session:
        for start in range(0, len(phones), 1000):
            chunk = phones[start : start + 1000]
            for phone, pid in session.execute(
                select(Patient.phone, Patient.id).where(Patient.phone.in_(chunk))
            ):
                if phone is not None:
                    by_phone[phone] = pid
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            for ref, pid in session.execute(
                select(Patient.clinic_ref, Patient.id)
                .where(Patient.clinic_ref.in_(chunk), Patient.erased_at.is_(None))
                .order_by(Patient.id)
            ):
                if ref is not None:
                    by_ref.setdefault(ref, pid)
    already: list[Already] = []
    new: list[Good] = []
    for each in good:
        phone, ref = each.request.phone, each.request.clinic_ref
        if phone is not None and phone in by_phone:
            already.append(Already(each.line, by_phone[phone], "phone"))
        elif ref is not None and ref in by_ref:
            already.append(Already(each.line, by_ref[ref], "clinic_ref"))
        else:
            new.append(each)
    return already, new


def enrol(
    db: Database,
    planner: Planner,
    report: Report,
    now: datetime,
    *,
    actor: str,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Enrol the report's good rows in one transaction, with one audit row for the import
    (its counts and who ran it). Returns how many were enrolled. On an error nothing is
    written (an InputError names the line when a number was taken meanwhile)."""

    def audited(session: Session) -> None:
        _audit(session, now, actor, report, imported=len(report.good))

    if not report.good:
        with db.session() as session:
            audited(session)
        return 0
    try:
        done = enroll_many(
            db,
            planner,
            [g.request for g in report.good],
            now,
            source=ConsentSource.CSV,
            actor=actor,
            progress=progress,
            then=audited,
            unbounded=True,
        )
    except InputError as exc:
        if exc.row is None:
            raise
        line = report.good[exc.row - 1].line
        raise InputError(exc.field, f"line {line}: {exc.message}", plain=exc.plain) from None
    if progress is not None:
        progress(len(done))
    return len(done)


def _audit(session: Session, now: datetime, actor: str, report: Report, *, imported: int) -> None:
    audit.record(
        session,
        now,
        actor,
        "patients_imported",
        rows=report.rows,
        imported=imported,
        already=len(report.already),
        bad=report.bad,
    )


# -- the staff page's imports: a row per upload, steps in background threads ----------------


@dataclass
class Live:
    checked: int = 0
    written: int = 0


_LIVE: dict[int, Live] = {}
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImportView:
    id: int
    actor: str
    file_name: str
    status: str  # checking, checked, unreadable, importing, imported, failed, discarded
    created_at: datetime
    rows: int
    checked: int
    ready: int
    already: int
    bad: int
    written: int
    error: str | None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def working(self) -> bool:
        return self.status in {"checking", "importing"}

    @property
    def done(self) -> bool:
        return not self.working


def upload(db: Database, data: bytes, file_name: str, now: datetime, *, actor: str) -> int:
    """Keep an uploaded file for checking; old files and reports are dropped first."""
    with db.session() as session:
        _drop_old(session, now)
        row = PatientImport(
            actor=actor,
            created_at=now,
            updated_at=now,
            status="checking",
            file_name=file_name[:200],
            content=data,
            rows=0,
            checked=0,
            ready=0,
            already=0,
            bad=0,
            written=0,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def _drop_old(session: Session, now: datetime) -> None:
    session.execute(
        update(PatientImport)
        .where(PatientImport.created_at < now - KEEP_FILE, PatientImport.content.is_not(None))
        .values(content=None)
    )
    session.execute(
        update(PatientImport)
        .where(PatientImport.created_at < now - KEEP_REPORT, PatientImport.report.is_not(None))
        .values(report=None)
    )


def run_check(db: Database, rules: IntakeRules, clock: Clock, import_id: int) -> None:
    """The check of an uploaded file (a background thread): the preview's report."""
    data = _content(db, import_id)
    if data is None:
        return
    try:
        report = check(
            db, rules, data, clock.now(), progress=_checked_counter(db, clock, import_id)
        )
    except FileError as exc:
        _finish(db, clock.now(), import_id, "unreadable", report={"file": exc.problems})
        return
    except Exception as exc:  # a background thread: said on the page, logged without data
        _failed(db, clock, import_id, exc, "checking")
        return
    _finish(
        db,
        clock.now(),
        import_id,
        "checked",
        report=_report_json(report),
        counts=_counts(report),
    )


def confirm(db: Database, import_id: int, now: datetime) -> bool:
    """Move a checked import on to importing; False if it is not (already) waiting for it."""
    with db.session() as session:
        moved = session.execute(
            update(PatientImport)
            .where(PatientImport.id == import_id, PatientImport.status == "checked")
            .values(status="importing", updated_at=now, checked=0, written=0)
        )
        return bool(getattr(moved, "rowcount", 0))


def run_import(
    db: Database, planner: Planner, rules: IntakeRules, clock: Clock, import_id: int, actor: str
) -> None:
    """The import itself (a background thread, after `confirm`): checked again, since the
    patients may have changed since the preview, then written in one transaction."""
    data = _content(db, import_id)
    if data is None:
        return
    try:
        report = check(
            db, rules, data, clock.now(), progress=_checked_counter(db, clock, import_id)
        )
        written = enrol(
            db, planner, report, clock.now(), actor=actor, progress=_written_counter(import_id)
        )
    except (FileError, InputError) as exc:
        problem = exc.plain if isinstance(exc, InputError) else str(exc)
        _finish(db, clock.now(), import_id, "failed", error=f"Nothing was imported: {problem}")
        return
    except Exception as exc:  # a background thread: said on the page, logged without data
        _failed(db, clock, import_id, exc, "importing")
        return
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(import_id, None)
    log.info(
        "patients imported from a CSV file",
        extra={"event": "importing.imported", "import_id": import_id, "count": written},
    )
    counts = _counts(report)
    counts["written"] = written
    _finish(db, clock.now(), import_id, "imported", report=_report_json(report), counts=counts)


def discard(db: Database, import_id: int, now: datetime, *, actor: str) -> bool:
    """Drop a checked file without importing it."""
    with db.session() as session:
        moved = session.execute(
            update(PatientImport)
            .where(
                PatientImport.id == import_id,
                PatientImport.status.in_(("checked", "unreadable")),
            )
            .values(status="discarded", content=None, updated_at=now)
        )
        if not getattr(moved, "rowcount", 0):
            return False
        audit.record(session, now, actor, "patient_import_discarded", import_id=import_id)
        return True


def view(db: Database, import_id: int, now: datetime) -> ImportView | None:
    with db.session() as session:
        row = session.get(PatientImport, import_id)
        if row is None:
            return None
        status, error = row.status, row.error
        checked, written = row.checked, row.written
        with _LIVE_LOCK:
            live = _LIVE.get(import_id)
            if live is not None:
                checked, written = max(checked, live.checked), max(written, live.written)
        if status in {"checking", "importing"} and live is None and row.updated_at < now - STALE:
            status = "failed"
            error = "This stopped part way (the service restarted?). Nothing was imported."
        return ImportView(
            id=row.id,
            actor=row.actor,
            file_name=row.file_name,
            status=status,
            created_at=row.created_at,
            rows=row.rows,
            checked=checked,
            ready=row.ready,
            already=row.already,
            bad=row.bad,
            written=written,
            error=error,
            report=row.report or {},
        )


def _content(db: Database, import_id: int) -> bytes | None:
    with db.session() as session:
        return session.execute(
            select(PatientImport.content).where(PatientImport.id == import_id)
        ).scalar_one_or_none()


def _checked_counter(db: Database, clock: Clock, import_id: int) -> Callable[[int], None]:
    def counted(count: int) -> None:
        with _LIVE_LOCK:
            _LIVE.setdefault(import_id, Live()).checked = count
        with db.session() as session:
            session.execute(
                update(PatientImport)
                .where(PatientImport.id == import_id)
                .values(checked=count, updated_at=clock.now())
            )

    return counted


def _written_counter(import_id: int) -> Callable[[int], None]:
    # In memory only: the write holds SQLite's write lock until it commits.
    def counted(count: int) -> None:
        with _LIVE_LOCK:
            _LIVE.setdefault(import_id, Live()).written = count

    return counted


def _counts(report: Report) -> dict[str, int]:
    return {
        "rows": report.rows,
        "checked": report.rows,
        "ready": len(report.good),
        "already": len(report.already),
        "bad": report.bad,
    }


def _report_json(report: Report) -> dict[str, Any]:
    return {
        "problems": [[p.line, p.field, p.message] for p in report.problems],
        "already": [[a.line, a.patient_id, a.matched] for a in report.already],
        "ready": [
            [
                g.line,
                g.request.name,
                g.request.phone or "",
                g.request.email or "",
                day(g.request.edd),
                ", ".join(sorted(g.request.channels)),
                g.request.clinic_ref or "",
            ]
            for g in report.good[:SHOWN_READY]
        ],
    }


def _finish(
    db: Database,
    now: datetime,
    import_id: int,
    status: str,
    *,
    report: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": now, **(counts or {})}
    if report is not None:
        values["report"] = report
    if error is not None:
        values["error"] = error[:500]
    if status not in {"checked", "unreadable"}:
        values["content"] = None  # imported or failed: the file is not kept
    with db.session() as session:
        session.execute(update(PatientImport).where(PatientImport.id == import_id).values(**values))
    with _LIVE_LOCK:
        _LIVE.pop(import_id, None)


def _failed(db: Database, clock: Clock, import_id: int, exc: Exception, step: str) -> None:
    # The exception's text may quote a row (a database error's detail): only its kind is logged.
    log.error(
        "patient import stopped on an error while %s",
        step,
        extra={"event": "importing.failed", "import_id": import_id, "error": type(exc).__name__},
    )
    _finish(
        db,
        clock.now(),
        import_id,
        "failed",
        error="The import stopped on an unexpected error; nothing was imported. Try again, "
        "or ask an operator to look at the logs.",
    )
