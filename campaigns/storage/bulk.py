"""Bulk writes for imports and enrolment: ids reserved up front, rows streamed with COPY.

On PostgreSQL, ids come from the tables' own sequences and rows go in through COPY (text
format), several times faster than INSERT ... RETURNING for thousands of rows. On SQLite, where
a transaction holds the write lock from BEGIN, ids follow the current maximum and rows go in
with executemany. Either way everything stays inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from campaigns.storage.models import Base

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def reserve_ids(session: Session, model: type[Base], count: int) -> list[int]:
    """`count` fresh primary keys for the model's table, never handed out to anyone else."""
    table = _table(model)
    if count == 0:
        return []
    if is_postgres(session):
        rows = session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                "FROM generate_series(1, :count)"
            ),
            {"table": table.name, "count": count},
        ).scalars()
        return [int(i) for i in rows]
    # SQLite: this transaction already holds the write lock (BEGIN IMMEDIATE), so max+1 is ours.
    start = session.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()
    return list(range(int(start) + 1, int(start) + 1 + count))


def copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    kind = type(value)
    if kind is str:
        return value.translate(_ESCAPES)  # type: ignore[no-any-return]
    if value is None:
        return NULL
    if kind is int:
        return str(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is datetime:
        return iso(value)
    if kind is date:
        return value.isoformat()  # type: ignore[no-any-return]
    if kind is tuple:
        return _json_tuple(value)
    if isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"))
    return str(value).translate(_ESCAPES)


@lru_cache(maxsize=4096)
def _json_tuple(value: tuple[Any, ...]) -> str:
    """JSON columns given as (hashable) tuples repeat across a bulk write: encode each once."""
    return json.dumps(value, separators=(",", ":")).translate(_ESCAPES)


@lru_cache(maxsize=65536)
def iso(instant: datetime) -> str:
    """Timestamps repeat across a bulk write (one `now`, shared due times): format each once."""
    return instant.isoformat()


def copy_line(values: Iterable[Any]) -> str:
    return "\t".join([copy_field(v) for v in values]) + "\n"


def write_rows(
    session: Session,
    model: type[Base],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    line: Callable[[Sequence[Any]], str] = copy_line,
) -> None:
    """Insert rows (tuples in `columns` order) in bulk, inside the session's transaction.

    `rows` may be a generator: on PostgreSQL it is consumed while COPY streams, so producing
    the rows overlaps the database's work. `line` formats one row for COPY; hot paths pass a
    formatter that knows its column types.
    """
    if is_postgres(session):
        copy_lines(session, model, columns, (line(row) for row in rows))
        return
    params = [dict(zip(columns, row, strict=True)) for row in rows]
    if params:
        session.execute(insert(_table(model)), params)


def text_or_null(value: str | None) -> str:
    return NULL if value is None else value.translate(_ESCAPES)


def copy_lines(
    session: Session, model: type[Base], columns: Sequence[str], lines: Iterable[str]
) -> None:
    """Stream pre-formatted COPY text lines into the model's table (PostgreSQL only)."""
    driver = session.connection().connection.driver_connection
    assert driver is not None
    statement = f"COPY {_table(model).name} ({', '.join(columns)}) FROM STDIN"
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            buffer: list[str] = []
            size = 0
            for line in lines:
                buffer.append(line)
                size += len(line)
                if size > 1 << 16:  # small chunks: the server works while we format
                    copy.write("".join(buffer))
                    buffer, size = [], 0
            if buffer:
                copy.write("".join(buffer))
    except psycopg.IntegrityError as exc:
        # Callers handle SQLAlchemy's exceptions; the raw COPY raises the driver's own.
        raise sa_exc.IntegrityError(statement, None, exc) from exc
