"""The fault suite's table, printed at the end of the run (docs/reliability.md explains it)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.faults.stack import Result

RESULTS: list[Result] = []
COLUMNS = (
    ("fault", "fault"),
    ("due", "due"),
    ("sent_once", "sent once"),
    ("duplicates", "dup"),
    ("lost", "lost"),
    ("cancelled", "cancelled"),
    ("unknown_reconciled", "reconciled"),
    ("sends_after_cancel", "after cancel"),
    ("text_p99_ms", "text p99 ms"),
    ("recovered_s", "recovered s"),
    ("settled_s", "settled s"),
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fault suite")
    terminalreporter.write_line(" | ".join(title for _, title in COLUMNS))
    for result in RESULTS:
        row = result.row()
        terminalreporter.write_line(" | ".join(str(row[key]) for key, _ in COLUMNS))


@pytest.fixture
def results() -> list[Result]:
    return RESULTS
