"""Engines and sessions for PostgreSQL and the embedded SQLite file, with the same semantics.

SQLite: WAL, foreign keys, a busy timeout, and every transaction begins IMMEDIATE (it takes the
write lock at once). That gives SQLite the one guarantee the send path needs from PostgreSQL's
row locks: a cancellation and a send re-check never interleave.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Engine, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool


def among(column: Any, values: Collection[Any], *, postgres: bool) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL one array parameter (`= ANY`): the statement's text
    is then the same for any number of values, so it is neither re-rendered nor re-parsed
    for each batch, as an IN list of a hundred placeholders would be."""
    if postgres:
        return cast(
            ColumnElement[bool],
            column == any_(bindparam(None, list(values), type_=ARRAY(column.type))),
        )
    return cast(ColumnElement[bool], column.in_(list(values)))


@dataclass(frozen=True)
class Timeouts:
    """Upper bounds on waiting, for connections that answer someone who will not wait (a
    provider's webhook gives up after 15 s). PostgreSQL only."""

    lock_seconds: float
    statement_seconds: float
    #: Check each connection with a round trip before use. Off where the work retries on a
    #: dropped connection itself: the check is one of a reply's handful of round trips.
    pre_ping: bool = True

    def options(self) -> str:
        return (
            f"-c lock_timeout={int(self.lock_seconds * 1000)} "
            f"-c statement_timeout={int(self.statement_seconds * 1000)}"
        )


#: Execution option marking a read-only connection (Database.reading).
READ_ONLY = "campaigns_read_only"


def make_engine(url: str, *, pool_size: int = 10, timeouts: Timeouts | None = None) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=timeouts.pre_ping if timeouts else True,
        future=True,
        hide_parameters=True,  # errors are logged: never with phone numbers or message text
        connect_args={"options": timeouts.options()} if timeouts else {},
    )


def _sqlite_engine(url: str) -> Engine:
    # A file database gets a fresh connection per use: cheap for SQLite, and it keeps threads
    # from sharing a connection.
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"check_same_thread": False},
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read (Database.reading) takes no write lock, so it can run beside a transaction
        # of the same thread that holds one (WAL lets readers and one writer work at once).
        deferred = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


class Database:
    """The engine plus a session factory; `session()` commits on success, rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False, future=True)

    @classmethod
    def from_url(
        cls, url: str, *, pool_size: int = 10, timeouts: Timeouts | None = None
    ) -> Database:
        return cls(make_engine(url, pool_size=pool_size, timeouts=timeouts))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for a few reads, safe to open while this thread has a session open
        (on SQLite, where a second writing transaction would wait for the first)."""
        with self.engine.connect().execution_options(**{READ_ONLY: True}) as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def insert_if_absent(session: Session, model: type[Any], **values: Any) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True if a row was added.

    Asks for the new row's key back and counts rows, not `rowcount`: for an ORM-enabled
    INSERT with RETURNING the driver's rowcount does not say whether the conflict fired.
    """
    statement = insert_ignoring(session, model, tuple(values))
    return session.connection().execute(statement, values).first() is not None


_IGNORING: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def insert_ignoring(session: Session, model: type[Any], columns: tuple[str, ...]) -> Any:
    """The INSERT ... ON CONFLICT DO NOTHING RETURNING <key> statement for this database and
    these columns, built once (building it cost more than running it); run it with values."""
    dialect = session.get_bind().dialect.name
    cache_key = (model.__tablename__, dialect, columns)
    found = _IGNORING.get(cache_key)
    if found is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = model.__table__
        key = next(iter(table.primary_key.columns))
        found = _IGNORING[cache_key] = (
            insert(table)
            .values({name: bindparam(name) for name in columns})
            .on_conflict_do_nothing()
            .returning(key)
        )
    return found
