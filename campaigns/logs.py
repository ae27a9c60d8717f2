"""How every process logs: one line per event, JSON in production (docs/decisions.md, "Logs").

The standard library's logging with a JSON formatter, not structlog: Celery, uvicorn,
SQLAlchemy and the provider SDKs all log through the standard library, so one formatter on the
root logger shapes every line, ours and theirs, with nothing to bridge.

Each line carries:
- `event`: a stable name for what happened (`extra={"event": ...}` at our call sites; the
  logger's name for a library's lines), for alerting and counting without parsing messages;
- `request_id` (an HTTP request; also answered as X-Request-ID) and `task_id` / `task` (a
  Celery task), so one request's or one task's lines can be found together.

Never a phone number, an email address, a message body or a token: call sites log ids only,
and as a net under that, anything shaped like a phone number or an email address is masked
in the message and any traceback. Celery's "task received / succeeded" lines for periodic
jobs (every two seconds, all night) are DEBUG; INFO says something happened.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from campaigns.settings import Settings

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
TASK: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("task", default=None)

_PHONE = re.compile(r"(?<![\w+])(?:\+\d{7,15}|0\d{9,10}|44\d{9,10})(?!\w)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
#: Celery's lines about each task; quiet (DEBUG) for the periodic ones.
_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def mask(text: str) -> str:
    """Phone numbers and email addresses replaced by a marker (the net, not the rule)."""
    return _EMAIL.sub("[email]", _PHONE.sub("[phone]", text))


def _context(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    request = REQUEST_ID.get()
    if request is not None:
        found["request_id"] = request
    task = TASK.get()
    if task is not None:
        found["task"], found["task_id"] = task
    return found


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": getattr(record, "event", None) or record.name,
            "logger": record.name,
            "message": mask(record.getMessage()),
            **_context(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line and key != "event":
                line[key] = value if isinstance(value, int | float | bool) else mask(str(value))
        if record.exc_info:
            line["error"] = getattr(record.exc_info[0], "__name__", "error")
            line["traceback"] = mask(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = _context(record)
        text = mask(super().format(record))
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return text


class QuietPeriodic(logging.Filter):
    """Celery's per-task lines for periodic tasks become DEBUG (dropped unless DEBUG is on)."""

    def __init__(self, names: frozenset[str]) -> None:
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        args = record.args
        named = args.get("name") if isinstance(args, dict) else None
        if named is None and isinstance(args, tuple) and args:
            named = args[0]
        if named not in self.names:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def configure(settings: Settings, quiet_tasks: frozenset[str] = frozenset()) -> None:
    """Every line through one handler on the root logger, in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.json_logs else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    quiet = QuietPeriodic(quiet_tasks)
    for name in _TASK_LOGGERS:
        task_logger = logging.getLogger(name)
        for old_filter in list(task_logger.filters):
            if isinstance(old_filter, QuietPeriodic):
                task_logger.removeFilter(old_filter)
        task_logger.addFilter(quiet)
    # Their own handlers would print a second, unformatted copy of each line.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


@contextmanager
def task_context(name: str, task_id: str) -> Iterator[None]:
    token = TASK.set((name, task_id))
    try:
        yield
    finally:
        TASK.reset(token)
