"""Log lines: JSON with an event name and the request or task they belong to, contact details
masked as a net, periodic tasks' chatter at DEBUG, and an event name at every call site."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path

import pytest

from campaigns import logs
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"info", "warning", "error", "exception", "critical"}


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("campaigns.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_json_line_names_its_event_request_and_task() -> None:
    token = logs.REQUEST_ID.set("req-1")
    try:
        with logs.task_context("campaigns.send_batch", "task-9"):
            line = json.loads(
                logs.JsonFormatter().format(
                    _record("sent %d", 3, event="sending.message_sent", count=3)
                )
            )
    finally:
        logs.REQUEST_ID.reset(token)
    assert line["event"] == "sending.message_sent" and line["level"] == "INFO"
    assert (line["request_id"], line["task"], line["task_id"]) == (
        "req-1",
        "campaigns.send_batch",
        "task-9",
    )
    assert line["message"] == "sent 3" and line["count"] == 3
    assert line["ts"].endswith("+00:00")


def test_a_library_line_without_an_event_is_named_by_its_logger() -> None:
    line = json.loads(logs.JsonFormatter().format(_record("hello")))
    assert line["event"] == "campaigns.test" and "request_id" not in line


@pytest.mark.parametrize(
    "text",
    [
        "from +447400123401 today",
        "number 07400123401 given",
        "to 447400123401.",
        "write to ada.lovelace+x@example.co.uk please",
    ],
)
def test_contact_details_are_masked_in_message_extra_and_traceback(text: str) -> None:
    try:
        raise ValueError(text)
    except ValueError:
        record = _record("failed: %s", text, note=text)
        record.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(record)
    plain = logs.TextFormatter().format(record)
    for output in (line, plain):
        assert "7400123401" not in output and "ada.lovelace" not in output
    parsed = json.loads(line)
    assert parsed["error"] == "ValueError" and "[" in parsed["note"]


def test_periodic_tasks_chatter_is_debug_but_other_tasks_stay_info() -> None:
    quiet = logs.QuietPeriodic(frozenset({"campaigns.dispatch_due"}))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        periodic = _record("Task %(name)s[%(id)s] succeeded", event=None)
        periodic.args = {"name": "campaigns.dispatch_due", "id": "1"}
        assert quiet.filter(periodic) is False and periodic.levelname == "DEBUG"
        batch = _record("Task %(name)s[%(id)s] succeeded")
        batch.args = {"name": "campaigns.send_batch", "id": "2"}
        assert quiet.filter(batch) is True and batch.levelname == "INFO"
        root.setLevel(logging.DEBUG)
        again = _record("Task %s received", "campaigns.dispatch_due")
        assert quiet.filter(again) is True and again.levelname == "DEBUG"
    finally:
        root.setLevel(level)


def test_configure_puts_one_handler_in_the_chosen_format_on_the_root() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        logs.configure(make_settings(log_format="json", log_level="WARNING"))
        assert len(root.handlers) == 1 and root.level == logging.WARNING
        assert isinstance(root.handlers[0].formatter, logs.JsonFormatter)
        logs.configure(make_settings(log_format="text"))
        assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _calls_without_event() -> list[str]:
    missing = []
    for path in sorted([*ROOT.glob("campaigns/**/*.py"), *ROOT.glob("workers/**/*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"log", "logger"}
            ):
                continue
            extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
            named = isinstance(extra, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == "event" for k in extra.keys
            )
            if not named:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return missing


def test_every_line_at_info_or_above_names_its_event() -> None:
    assert _calls_without_event() == []
