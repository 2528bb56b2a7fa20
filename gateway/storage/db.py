"""Engine and sessions: SQLite (WAL, synchronous=FULL, foreign keys) or PostgreSQL."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Dialect, Engine, Select, create_engine, event, text
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import UpdateBase

from gateway.errors import ConfigError, StorageUnavailable

log = logging.getLogger("gateway.storage")

__all__ = ["Connection", "Database", "Reads", "Session", "Writes", "make_engine", "writes_of"]
"""`Session`, `Connection`, `Reads` and `Writes` are re-exported: modules outside storage/ name
them in signatures, never query them."""


SQLITE_MMAP_BYTES = 1 << 31
"""How much of the database file SQLite reads through a memory map (it lowers a larger
value to its own bound, 2 GB less 64 KB on Debian's build).  Each connection otherwise
copies pages into a page cache of its own (2 MB by default) with a read call each: with
a pool of 32 connections and a million submissions, the random keys of the duplicate
and document-hash indexes missed that cache on nearly every statement.  Through the map
every connection reads the one copy in the system's page cache.  Writes still go
through write() and the WAL, so durability is unchanged (SQLite's "Memory-Mapped I/O").
A disk failing to read a mapped page stops the process (SIGBUS) instead of raising: as
after a SIGKILL, nothing acknowledged is lost."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is switched off: we issue BEGIN ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Statement journals (and sorts) in memory: on disk, SQLite creates, writes
    # and unlinks a file in the system's temporary directory in nearly every
    # write transaction, a journal commit of that file system each time.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


READ_ONLY = "gateway_read_only"


def _sqlite_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so two writers never
    # deadlock upgrading a read lock: the second one waits (busy_timeout).
    # Read-only transactions take a plain BEGIN: in WAL mode they never wait.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for another database, or one in memory)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


POOL_SIZE = 32
"""Connections a process keeps open by default (`database.pool_size`): one per ingest
thread (`Pipeline`), so the accept path never opens one under load."""
POOL_OVERFLOW = 8
"""Connections opened beyond the pool under a burst, each closed once it is returned."""


def make_engine(url: str, pool_size: int = POOL_SIZE) -> Engine:
    """Build the engine for a database URL, with our durability settings.

    Nothing is connected, and nothing is created on disk, until first use;
    `gateway.storage.migrate.upgrade` makes a SQLite file's folder.  The pool
    keeps up to `pool_size` connections open: every thread that holds one at
    the same time beyond that opens a fresh connection and closes it again
    (SQLAlchemy's QueuePool drops the overflow), which cost a new SQLite
    connection every other message at 20 sessions (schema read, statements
    prepared again) and a new PostgreSQL backend every few messages with the
    pool of 5 (SQLite) or 10 (PostgreSQL) this had before.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=POOL_OVERFLOW,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url, pool_pre_ping=True, pool_size=pool_size, max_overflow=POOL_OVERFLOW
        )
    raise ConfigError(
        "invalid configuration: database.url: only sqlite and postgresql are supported"
    )


Row = tuple[Any, ...]
R = TypeVar("R")
if TYPE_CHECKING:
    from typing import TypeAlias

    AnySelect: TypeAlias = Select[*tuple[Any, ...]]  # SQLAlchemy 2.1's typing


class Reads:
    """Where a read transaction's SELECTs run: the accept path's narrow point reads.

    This one runs them through SQLAlchemy Core on a Connection (PostgreSQL, or
    a Session's connection); `SqliteReads` runs the same statements on the
    driver's own connection.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def rows(self, statement: AnySelect, params: Mapping[str, Any]) -> Sequence[Row]:
        """Every row of `statement` with these bound values, as tuples."""
        return [tuple(row) for row in self.connection.execute(statement, params)]

    def first(self, statement: AnySelect, params: Mapping[str, Any]) -> Row | None:
        """The first row, or None."""
        row = self.connection.execute(statement, params).first()
        return None if row is None else tuple(row)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled once for SQLite: its SQL and how to bind and read its values."""

    statement: AnySelect | UpdateBase  # held so that the id keying the cache is never reused
    sql: str
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    binds: tuple[Callable[[Any], Any] | None, ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional values of one execution, through the bind processors."""
        values = []
        for name, process in zip(self.names, self.binds, strict=True):
            value = params[name] if name in params else self.defaults[name]
            values.append(value if process is None else process(value))
        return values

    def rows(self, fetched: list[Row]) -> list[Row]:
        """Fetched rows through the result processors."""
        results = self.results
        if not any(results):
            return fetched
        return [
            tuple(v if p is None else p(v) for v, p in zip(row, results, strict=True))
            for row in fetched
        ]


def _compile_for(
    statement: AnySelect | UpdateBase, dialect: Dialect, column_keys: Sequence[str] | None
) -> _Compiled | None:
    """The statement's SQL and value processors, or None if it needs SQLAlchemy at each run.

    `column_keys` are the parameter names of an INSERT or UPDATE, as Core
    compiles it for the parameters it is given.  None for a statement whose
    values Core computes at each execution: an expanding IN (rendered again),
    a column default or onupdate evaluated in Python.
    """
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    names = tuple(compiled.positiontup or ())
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None
    if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        return None
    binds = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    columns = (
        statement.selected_columns if isinstance(statement, Select) else statement.exported_columns
    )
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    )
    return _Compiled(statement, compiled.string, names, compiled.params, binds, results)


_CompileCache = dict[tuple[int, tuple[str, ...] | None], _Compiled | None]
_CACHES: weakref.WeakKeyDictionary[Dialect, _CompileCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _cache_of(dialect: Dialect) -> _CompileCache:
    """The compiled statements of one engine's dialect (readers and the writer share it)."""
    cache = _CACHES.get(dialect)
    if cache is not None:  # every statement but the first of an engine: no lock
        return cache
    with _CACHES_LOCK:
        cache = _CACHES.get(dialect)
        if cache is None:
            cache = _CACHES[dialect] = {}
        return cache


class _SqliteStatements:
    """Statements compiled once per dialect and column keys, run on a sqlite3 connection."""

    def __init__(self, raw: sqlite3.Connection, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect
        self._cache = _cache_of(dialect)

    def _compiled(
        self, statement: AnySelect | UpdateBase, keys: tuple[str, ...] | None
    ) -> _Compiled:
        key = (id(statement), keys)
        try:
            compiled = self._cache[key]
        except KeyError:
            compiled = self._cache[key] = _compile_for(statement, self.dialect, keys)
        if compiled is None:
            raise TypeError("statement cannot be compiled once for SQLite")
        return compiled


class SqliteReads(_SqliteStatements, Reads):
    """`Reads` on sqlite3 itself: each statement compiled once, then one driver call.

    Through Core each of these point reads cost about ten times the read
    itself (compiled-cache lookup, execution context, result object, events),
    and a message makes five or six of them.  The SQL, the bound values and
    the values read back are the ones Core would give: the statement is
    compiled by SQLAlchemy for this dialect, and every value goes through its
    column type's own bind and result processors.
    """

    def rows(self, statement: AnySelect, params: Mapping[str, Any]) -> Sequence[Row]:
        compiled = self._compiled(statement, None)
        return compiled.rows(self.raw.execute(compiled.sql, compiled.values(params)).fetchall())

    def first(self, statement: AnySelect, params: Mapping[str, Any]) -> Row | None:
        found = self.rows(statement, params)
        return found[0] if found else None


class Writes:
    """Where a write transaction's hot statements run: the group commit's units.

    This one runs them through SQLAlchemy Core on the session's connection
    (PostgreSQL); `SqliteWrites` runs the same statements on the driver's
    connection, in the same transaction.  Errors are SQLAlchemy's in both
    (IntegrityError for a unique index, OperationalError for a lost database).
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def count(self, statement: UpdateBase, params: Mapping[str, Any]) -> int:
        """Run an UPDATE, INSERT or DELETE without RETURNING: how many rows it touched."""
        return int(self.connection.execute(statement, params).rowcount)

    def one(self, statement: UpdateBase, params: Mapping[str, Any]) -> Row:
        """Run a statement with RETURNING that touches one row: the row it returns."""
        return tuple(self.connection.execute(statement, params).one())

    def many(self, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run an INSERT once per row (`executemany`); every row has the same keys."""
        if rows:
            self.connection.execute(statement, rows)

    def first(self, statement: AnySelect, params: Mapping[str, Any]) -> Row | None:
        """A SELECT in the write transaction: its first row, or None."""
        row = self.connection.execute(statement, params).first()
        return None if row is None else tuple(row)


class SqliteWrites(_SqliteStatements, Writes):
    """`Writes` on sqlite3 itself, compiled once like `SqliteReads`.

    Each write through Core cost several times the write itself; the writer
    thread runs three per message and a few per batch, and every message
    waits for it.  The driver's errors become SQLAlchemy's, as Core raises them.
    """

    def count(self, statement: UpdateBase, params: Mapping[str, Any]) -> int:
        compiled = self._compiled(statement, tuple(params))
        return self._run(compiled, [compiled.values(params)], False, lambda c: c.rowcount)

    def one(self, statement: UpdateBase, params: Mapping[str, Any]) -> Row:
        compiled = self._compiled(statement, tuple(params))
        fetched = self._run(compiled, [compiled.values(params)], False, sqlite3.Cursor.fetchall)
        if not fetched:
            raise NoResultFound("No row was found when one was required")
        if len(fetched) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return compiled.rows(fetched)[0]

    def many(self, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        compiled = self._compiled(statement, tuple(rows[0]))
        # One row is one execute, as Core sends it.
        values = [compiled.values(row) for row in rows]
        self._run(compiled, values, len(rows) > 1, lambda _cursor: None)

    def first(self, statement: AnySelect, params: Mapping[str, Any]) -> Row | None:
        compiled = self._compiled(statement, None)
        fetched = self._run(compiled, [compiled.values(params)], False, sqlite3.Cursor.fetchall)
        return compiled.rows(fetched[:1])[0] if fetched else None

    def _run(
        self,
        compiled: _Compiled,
        values: list[list[Any]],
        many: bool,
        read: Callable[[sqlite3.Cursor], R],
    ) -> R:
        """The one driver call (and what `read` takes of its cursor); errors as Core's."""
        try:
            if many:
                cursor = self.raw.executemany(compiled.sql, values)
            else:
                cursor = self.raw.execute(compiled.sql, values[0])
            return read(cursor)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                compiled.sql, values, exc, sqlite3.Error, hide_parameters=True,
                dialect=self.dialect,
            ) from exc  # fmt: skip


def sqlite_connection(connection: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLite Connection (its transaction, begun if need be)."""
    raw: sqlite3.Connection = connection.connection.driver_connection  # type: ignore[assignment]
    return raw


def writes_of(session: Session) -> Writes:
    """The `Writes` of a write transaction's session (its connection, begun if need be)."""
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return Writes(connection)
    return SqliteWrites(sqlite_connection(connection), connection.dialect)


class WriterLock:
    """SQLite's write lock, taken in the open before BEGIN IMMEDIATE.

    SQLite lets one writer in at a time and makes the others poll with
    growing sleeps (its busy handler waits 1, 2, 5 … up to 100 ms between
    tries), so a writer often sleeps well after the lock is free.  Writers of
    this process queue on a thread lock, writers of other processes (serve
    --workers, CLI commands) on an flock of a file beside the database: each
    waiter goes in as soon as the holder is done.  The wait is bounded like
    SQLite's busy timeout.
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise StorageUnavailable("database is locked")
        try:
            fd = self._file()
            self._flock(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _file(self) -> int:
        # A file descriptor is per process: a child must not share its parent's flock.
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def _flock(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageUnavailable("database is locked") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


OUTBOX_QUEUED = "gateway.outbox_queued"
"""`Session.info` key: the transaction queued outgoing mail (`notify.notify_outbox`)."""


class CommitSignal:
    """Callbacks run in this process after a transaction that queued outgoing mail commits.

    The outbox worker subscribes, so a mail queued by any path (an API call, the
    console, a review action) is sent at once rather than at the next poll; on
    PostgreSQL the NOTIFY does the same for the other nodes and processes.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Add `callback`; returns what removes it again."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def fire(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a wake-up is an optimisation: never fail the committed work
                log.exception("outbox wake-up failed")


class Database:
    """The engine plus a session factory; `transaction()` is the unit of work."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.outbox_queued = CommitSignal()
        self._writer_lock: WriterLock | None = None
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if database and database != ":memory:":
            self._writer_lock = WriterLock(Path(f"{database}-writer.lock"))
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        read_options: dict[str, Any] = {READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            # One snapshot per read transaction, as SQLite's WAL gives: at READ COMMITTED each
            # statement sees what committed before it, and a read of several statements (the
            # audit walk then its head, blob rows then purging rows) mixes two states.
            read_options |= {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        self._read_engine = engine.execution_options(**read_options)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str, pool_size: int = POOL_SIZE) -> Database:
        return cls(make_engine(url, pool_size))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error.

        Connection-level failures become StorageUnavailable (a temporary fault).
        """
        lock = self._writer_lock.hold() if self._writer_lock else nullcontext()
        try:
            with lock, self._sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StorageUnavailable("database unavailable") from exc
        if session.info.pop(OUTBOX_QUEUED, False):
            self.outbox_queued.fire()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads, on one snapshot of the database.

        On SQLite it does not take the write lock (a plain BEGIN in WAL mode);
        on PostgreSQL it is READ ONLY at REPEATABLE READ (a read-only
        transaction there never fails to serialise).

        Anything written through it fails (SQLite refuses to upgrade a read
        transaction under contention); use `transaction()` to write.
        """
        try:
            with self._read_sessions() as session, session.begin():
                yield session
        except OperationalError as exc:
            raise StorageUnavailable("database unavailable") from exc

    @contextmanager
    def read_connection(self) -> Iterator[Reads]:
        """Like `reading()`, for the accept path's SELECTs: no ORM session, no Core on SQLite.

        The accept path's reads (registrations, duplicate, code, keys) are a few
        point reads per message; an ORM session and its unit of work around them
        cost many times the reads themselves.  On SQLite the transaction
        (a plain BEGIN, which never waits in WAL mode) and its reads run on the
        pooled driver connection (`SqliteReads`); on PostgreSQL, a Connection
        keeps SQLAlchemy's handling of a lost connection.
        """
        if not self.is_sqlite:
            try:
                with self._read_engine.connect() as connection, connection.begin():
                    yield Reads(connection)
            except OperationalError as exc:
                raise StorageUnavailable("database unavailable") from exc
            return
        try:
            pooled = self.engine.raw_connection()
        except OperationalError as exc:
            raise StorageUnavailable("database unavailable") from exc
        try:
            raw: sqlite3.Connection = pooled.driver_connection  # type: ignore[assignment]
            try:
                raw.execute("BEGIN")
                try:
                    yield SqliteReads(raw, self.engine.dialect)
                finally:
                    raw.execute("ROLLBACK")  # it only read: nothing to keep
            except sqlite3.OperationalError as exc:
                raise StorageUnavailable("database unavailable") from exc
        finally:
            pooled.close()

    def ping(self) -> None:
        """One round trip to the database (readiness); StorageUnavailable if it fails."""
        with self.reading() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writer_lock is not None:
            self._writer_lock.close()
