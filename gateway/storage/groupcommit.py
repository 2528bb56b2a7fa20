"""Group commit: the writes of many messages in one transaction, one fsync'd commit per batch.

Every accepted message used to pay for its own commit: on SQLite one WAL
fsync and one round of the single write lock (with the busy handler's sleeps
when two threads wanted it), on PostgreSQL one WAL flush.  Under concurrent
sessions most of a message's time went there.

Here one writer thread owns a connection.  Callers hand it a unit of work
and block until the batch holding it is durable (`run`), or get a future
settled then (`submit`: the pipeline awaits it on the event loop, so a
message waiting for its batch holds no thread).  The writer takes whatever
is queued (up to `max_batch`), runs each unit in a SAVEPOINT of one
transaction, runs the batch's pre-commit hooks (directory fsyncs of the
blob store), commits once, and only then releases the callers with their
results.  So "250 only after an fsync'd commit" holds for every message, and
the commit's cost is shared by the batch.

Rows nothing reads back before the commit (blob and document rows, the
receipt's outbox row, audit events) may be staged (`Batch.stage`,
`Batch.insert_later`) instead of written at once: they are kept only if the
unit that staged them succeeds, and written for the whole batch just before
the commit, one `executemany` per statement (and the audit chain's head read
and moved once).  Each statement is a trip through SQLAlchemy and the
driver, and a release and re-take of the interpreter lock: per batch
instead of per message.  A unit that stages its audit events reads no
sequence number back.

Isolation: a unit that raises has its savepoint rolled back, its staged rows
dropped, and gets its exception; the others are unaffected.  If the commit
itself (or a pre-commit hook, or writing the staged rows) fails, or a unit
finds the connection gone, every unit of the batch gets that error
(`StorageUnavailable` for a lost connection) and nothing of the batch is
stored.  A caller that is told its unit failed must undo what it did outside
the database (its blob files), exactly as after its own failed commit.

On PostgreSQL several processes may run writers on one database: each batch
first calls `on_begin` (the audit head lock), so batches take their row locks
after one global lock and cannot deadlock one another.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import OperationalError, PendingRollbackError
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import UpdateBase

from gateway.errors import CommitUncertain, StorageUnavailable
from gateway.storage.db import Database, sqlite_connection, writes_of

log = logging.getLogger("gateway.storage")

T = TypeVar("T")
S = TypeVar("S")


_SESSION_BATCH = "gateway.groupcommit.batch"


def batch_of(session: Session) -> Batch | None:
    """The group-commit batch `session` is running, if any (for code that stages rows)."""
    found = session.info.get(_SESSION_BATCH)
    return found if isinstance(found, Batch) else None


class Batch:
    """What a unit of work may ask of the batch it runs in."""

    def __init__(self) -> None:
        self._hooks: dict[Hashable, Callable[[], None]] = {}
        self._shared: dict[Hashable, Any] = {}
        self._flushes: dict[Hashable, Callable[[list[Any]], None]] = {}
        self._kept: dict[Hashable, list[Any]] = {}
        self._unit: dict[Hashable, list[Any]] = {}

    def before_commit(self, key: Hashable, hook: Callable[[], None]) -> None:
        """Run `hook` once per batch before the commit (deduplicated by `key`).

        For work whose durability the rows depend on, e.g. fsyncing the
        directory that holds a batch's new blob files.
        """
        self._hooks.setdefault(key, hook)

    def shared(self, key: Hashable, factory: Callable[[], S]) -> S:
        """One object per batch under `key` (made by `factory` on first use).

        For work gathered across the batch's units and done once by a hook,
        e.g. the list of blob files to fsync together.
        """
        if key not in self._shared:
            self._shared[key] = factory()
        found: S = self._shared[key]
        return found

    def stage(
        self, key: Hashable, items: Iterable[Any], flush: Callable[[list[Any]], None]
    ) -> None:
        """Stage `items` under `key`, to be written with the batch's others just before the commit.

        They are kept if the unit that stages them succeeds and dropped with
        its savepoint otherwise.  `flush` (the first one given for `key`)
        then runs once with every kept item under `key`, in the order the
        units ran, in the batch's transaction; if it fails, the whole batch
        fails, as a failed commit does.  Only for rows nothing reads back
        before the commit.
        """
        self._flushes.setdefault(key, flush)
        self._unit.setdefault(key, []).extend(items)

    def insert_later(
        self, session: Session, statement: UpdateBase, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Stage `rows` for `statement` (an INSERT): one `executemany` a batch (see `stage`)."""
        if not rows:
            return
        def insert(kept: list[Any]) -> None:
            writes_of(session).many(statement, kept)

        self.stage(("insert", id(statement)), rows, insert)

    def _keep_unit(self) -> None:
        for key, items in self._unit.items():
            self._kept.setdefault(key, []).extend(items)
        self._unit = {}

    def _drop_unit(self) -> None:
        self._unit = {}

    def _flush_staged(self) -> None:
        for key, flush in self._flushes.items():
            kept = self._kept.get(key)
            if kept:
                flush(kept)

    def run_hooks(self) -> None:
        for hook in self._hooks.values():
            hook()


Work = Callable[[Session, Batch], T]


@dataclass(eq=False)
class _Item(Generic[T]):
    work: Work[T]
    core_only: bool = False
    done: Future[T] = field(default_factory=Future)
    result: T | None = None
    error: BaseException | None = None


_STOP = object()


class GroupCommitter:
    """One writer thread committing queued units of work in batches."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 64,
        on_begin: Callable[[Session], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.max_batch = max_batch
        self.on_begin = on_begin
        self.on_batch = on_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self, work: Work[T], *, core_only: bool = False) -> T:
        """Run `work(session, batch)` in the next batch; return once that batch is committed.

        Raises what `work` raised (its savepoint rolled back), or the batch's
        commit error (nothing of the batch stored).
        """
        return self.submit(work, core_only=core_only).result()

    def submit(self, work: Work[T], *, core_only: bool = False) -> Future[T]:
        """Queue `work` for the next batch; the future is settled once that batch is committed.

        Its result is what `work` returned; its exception what `work` raised or
        the batch's commit error, as `run` raises them.  For callers that need
        not hold a thread while they wait (the pipeline awaits it on the event
        loop).  The future is never cancelled by the writer, and cancelling it
        does not stop the unit: once queued, it is committed or fails.

        `core_only` promises that `work` writes through Core statements only
        (its session's connection, `writes_of`), never ORM objects: on SQLite
        its savepoint is then the driver's own, not an ORM nested transaction
        (a unit that breaks the promise fails its whole batch).
        """
        item: _Item[T] = _Item(work, core_only)
        with self._lock:
            if self._closed:
                raise StorageUnavailable("the database writer is stopped")
            self._ensure_thread()
            self._queue.put(item)
        return item.done

    def close(self) -> None:
        """Finish what is queued, then stop the writer thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is None:
                return
            self._queue.put(_STOP)
        thread.join()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="gateway-writer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items: list[_Item[Any]] = [first]
            stop = False
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._commit(items)
            if stop:
                return

    def _commit(self, items: list[_Item[Any]]) -> None:
        batch = Batch()
        committing = False
        try:
            with self.db.transaction() as session:
                session.info[_SESSION_BATCH] = batch
                if self.on_begin is not None:
                    self.on_begin(session)
                for item in items:
                    self._run_one(session, batch, item)
                if any(item.error is None for item in items):
                    batch._flush_staged()
                    batch.run_hooks()
                    session.flush()
                session.info.pop(_SESSION_BATCH, None)
                committing = True  # leaving the block sends COMMIT
        except BaseException as exc:
            error = _batch_error(exc, committing)
            for item in items:
                if item.error is None:
                    item.error = error
            if not isinstance(exc, Exception):
                self._release(items)
                raise
        if self.on_batch is not None:
            try:
                self.on_batch(len(items))
            except Exception:  # metrics must never fail a batch
                log.exception("group commit observer failed")
        self._release(items)

    def _run_one(self, session: Session, batch: Batch, item: _Item[Any]) -> None:
        try:
            if item.core_only and self.db.is_sqlite:
                item.result = _in_driver_savepoint(session, batch, item.work)
            else:
                with session.begin_nested():
                    item.result = item.work(session, batch)
        except OrmInCoreUnit:
            batch._drop_unit()
            raise  # a bug, not this unit's failure: the whole batch fails
        except (OperationalError, PendingRollbackError, sqlite3.Error) as exc:
            # The connection is gone (the database crashed or was stopped): no savepoint
            # can be rolled back, so the whole batch fails, as a failed commit does.
            batch._drop_unit()
            raise StorageUnavailable("database unavailable") from exc
        except Exception as exc:  # this unit only: its savepoint is rolled back
            batch._drop_unit()
            item.error = exc
        except BaseException:
            batch._drop_unit()
            raise
        else:
            batch._keep_unit()

    @staticmethod
    def _release(items: list[_Item[Any]]) -> None:
        for item in items:
            if not item.done.set_running_or_notify_cancel():
                continue  # its caller cancelled the future: nobody is told
            if item.error is not None:
                item.done.set_exception(item.error)
            else:
                item.done.set_result(item.result)


class OrmInCoreUnit(RuntimeError):
    """A unit queued as Core-only left ORM objects in its session."""


def _in_driver_savepoint(session: Session, batch: Batch, work: Work[T]) -> T:
    """Run a Core-only unit in a SAVEPOINT of the SQLite driver's connection.

    An ORM nested transaction around each unit cost more than the unit's own
    statements; a Core-only unit has no ORM state for it to expire.  A unit
    that leaves ORM objects behind (they would be flushed outside its
    savepoint), or flushes them, raises `OrmInCoreUnit`.
    """
    raw = sqlite_connection(session.connection())
    raw.execute("SAVEPOINT unit")
    session.info[_CORE_UNIT] = True  # a flush now raises (`_refuse_flush`)
    try:
        result = work(session, batch)
        if session.new or session.deleted or session.dirty:
            raise OrmInCoreUnit("a unit of work queued as Core-only left ORM changes")
    except BaseException:
        raw.execute("ROLLBACK TO unit")
        raw.execute("RELEASE unit")
        raise
    finally:
        session.info.pop(_CORE_UNIT, None)
    raw.execute("RELEASE unit")
    return result


_CORE_UNIT = "gateway.groupcommit.core_unit"


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.info.get(_CORE_UNIT):
        raise OrmInCoreUnit("a unit of work queued as Core-only flushed ORM objects")


def _batch_error(exc: BaseException, committing: bool) -> Exception:
    """What each unit of a failed batch is told.

    Before COMMIT was sent, nothing of the batch is stored.  A failure of the
    COMMIT itself (the connection lost while the server commits) leaves it
    unknown whether the rows are stored: `CommitUncertain`, so that nobody
    deletes files the rows may name.
    """
    if not isinstance(exc, Exception):
        return StorageUnavailable("writer stopped")
    if committing and isinstance(exc, StorageUnavailable):
        return CommitUncertain("database connection lost while committing")
    return exc
