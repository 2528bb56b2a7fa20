"""Group commit on SQLite and PostgreSQL: one commit per batch, each unit in a savepoint."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from gateway.audit.chain import verify_chain
from gateway.errors import CommitUncertain, StorageUnavailable
from gateway.storage.audit import AuditRepository, append_event, lock_head
from gateway.storage.db import Database, SqliteWrites, writes_of
from gateway.storage.groupcommit import Batch, GroupCommitter, OrmInCoreUnit
from gateway.storage.models import Court, Outbox, table_of
from gateway.storage.outbox import enqueue_later

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
COURTS = insert(table_of(Court))


@pytest.fixture
def commits(db: Database) -> list[int]:
    """One entry per COMMIT the engine sends."""
    seen: list[int] = []
    event.listen(db.engine, "commit", lambda conn: seen.append(1))
    return seen


def add_court(code: str) -> Callable[[Session, Batch], str]:
    def work(session: Session, batch: Batch) -> str:
        session.add(Court(code=code, name=code, created_at=NOW))
        session.flush()
        append_event(session, NOW, "court.added", actor="test", subject=code)
        return code

    return work


def court_codes(db: Database) -> list[str]:
    with db.reading() as session:
        return sorted(session.scalars(select(Court.code)))


class Gate:
    """A first unit that holds the writer until the others are queued behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, session: Session, batch: Batch) -> str:
        self.entered.set()
        assert self.release.wait(30)
        return add_court("TJ-GATE")(session, batch)


def run_batch(
    committer: GroupCommitter,
    works: list[Callable[[Session, Batch], Any]],
    *,
    core_only: bool = False,
) -> list[Any]:
    """Run `works` so that all of them land in one batch; results or exceptions, in order."""
    gate = Gate()
    results: list[Any] = [None] * len(works)

    def call(index: int) -> None:
        try:
            results[index] = committer.run(works[index], core_only=core_only)
        except Exception as exc:
            results[index] = exc

    def hold() -> None:
        with contextlib.suppress(Exception):  # the gate's own unit shares the batch's fate
            committer.run(gate)

    first = threading.Thread(target=hold)
    first.start()
    assert gate.entered.wait(30)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for queued, thread in enumerate(threads, start=1):
        # One at a time, so the units queue behind the gate in the order of `works`
        # (started together, the threads would reach the queue in any order).
        thread.start()
        while committer._queue.qsize() < queued:
            threading.Event().wait(0.001)
    gate.release.set()
    first.join(30)
    for thread in threads:
        thread.join(30)
    return results


def test_queued_units_share_one_commit(db: Database, commits: list[int]) -> None:
    batches: list[int] = []
    committer = GroupCommitter(db, on_begin=lock_head, on_batch=batches.append)
    before = len(commits)
    results = run_batch(committer, [add_court(f"TJ-{i:02d}") for i in range(10)])
    committer.close()
    assert results == [f"TJ-{i:02d}" for i in range(10)]
    assert batches == [1, 10]  # the gate alone, then the ten queued behind it
    assert len(commits) - before == 2
    assert court_codes(db) == sorted([*(f"TJ-{i:02d}" for i in range(10)), "TJ-GATE"])
    with db.reading() as session:
        report = verify_chain(AuditRepository(session))
    assert report.ok and report.events == 11


def test_a_failing_unit_is_rolled_back_alone(db: Database) -> None:
    def fails(session: Session, batch: Batch) -> str:
        add_court("TJ-BAD")(session, batch)
        raise ValueError("refused by the unit")

    committer = GroupCommitter(db)
    results = run_batch(committer, [add_court("TJ-A"), fails, add_court("TJ-B")])
    committer.close()
    assert results[0] == "TJ-A" and results[2] == "TJ-B"
    assert isinstance(results[1], ValueError)
    assert court_codes(db) == ["TJ-A", "TJ-B", "TJ-GATE"]
    with db.reading() as session:
        assert verify_chain(AuditRepository(session)).ok
        subjects = [e.subject for e in AuditRepository(session).page(0, 100)]
    assert subjects == ["TJ-GATE", "TJ-A", "TJ-B"]  # the failed unit's event went with it


def test_a_constraint_violation_fails_only_its_unit(db: Database) -> None:
    committer = GroupCommitter(db)
    results = run_batch(committer, [add_court("TJ-A"), add_court("TJ-A"), add_court("TJ-C")])
    committer.close()
    assert results[0] == "TJ-A" and results[2] == "TJ-C"
    assert isinstance(results[1], IntegrityError)
    assert court_codes(db) == ["TJ-A", "TJ-C", "TJ-GATE"]


def core_court(code: str, fail: bool = False) -> Callable[[Session, Batch], str]:
    """A Core-only unit: the court's row through `writes_of`, its event staged."""

    def work(session: Session, batch: Batch) -> str:
        writes_of(session).many(COURTS, [{"code": code, "name": code, "created_at": NOW}])
        append_event(session, NOW, "court.added", actor="test", subject=code)
        if fail:
            raise ValueError("refused by the unit")
        return code

    return work


def test_core_only_units_share_a_commit_and_a_failing_one_is_rolled_back_alone(
    db: Database, commits: list[int], statements: list[tuple[str, bool]]
) -> None:
    committer = GroupCommitter(db, on_begin=lock_head)
    before = len(commits)
    works = [core_court("TJ-A"), core_court("TJ-X", fail=True), core_court("TJ-A"),
             core_court("TJ-B")]  # fmt: skip
    results = run_batch(committer, works, core_only=True)
    committer.close()
    assert results[0] == "TJ-A" and results[3] == "TJ-B"
    assert isinstance(results[1], ValueError) and isinstance(results[2], IntegrityError)
    assert len(commits) - before == 2  # the gate's batch, then the four units' one
    assert court_codes(db) == ["TJ-A", "TJ-B", "TJ-GATE"]
    with db.reading() as session:
        assert verify_chain(AuditRepository(session)).ok
        subjects = [e.subject for e in AuditRepository(session).page(0, 100)]
    assert subjects == ["TJ-GATE", "TJ-A", "TJ-B"]
    orm_savepoints = [sql for sql, _ in statements if sql.startswith("SAVEPOINT")]
    # On SQLite only the gate (an ORM unit) took an ORM savepoint; the others the driver's.
    assert len(orm_savepoints) == (1 if db.is_sqlite else 5)


def test_a_core_only_unit_that_uses_the_orm_fails_its_batch(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("on PostgreSQL every unit has an ORM savepoint")
    def pending(session: Session, batch: Batch) -> None:
        session.add(Court(code="TJ-PENDING", name="TJ-PENDING", created_at=NOW))  # no flush

    committer = GroupCommitter(db)
    for orm in (add_court("TJ-ORM"), pending):  # a flush inside the unit, or one left for later
        results = run_batch(committer, [core_court("TJ-A"), orm, core_court("TJ-B")],
                            core_only=True)  # fmt: skip
        assert all(isinstance(r, OrmInCoreUnit) for r in results), results
    committer.close()
    assert court_codes(db) == ["TJ-GATE"]  # the gate's own batches: nothing of the others


def test_a_failed_pre_commit_hook_stores_nothing_of_the_batch(db: Database) -> None:
    def breaks_the_batch(session: Session, batch: Batch) -> str:
        def hook() -> None:
            raise StorageUnavailable("blob store unavailable")

        batch.before_commit("sync", hook)
        return add_court("TJ-HOOK")(session, batch)

    committer = GroupCommitter(db)
    results = run_batch(committer, [add_court("TJ-A"), breaks_the_batch, add_court("TJ-B")])
    committer.close()
    assert all(isinstance(result, StorageUnavailable) for result in results)
    assert court_codes(db) == ["TJ-GATE"]


def test_a_failed_pre_commit_hook_is_not_an_uncertain_commit(db: Database) -> None:
    """Nothing was sent to COMMIT: the callers may remove their files."""

    def breaks_the_batch(session: Session, batch: Batch) -> str:
        def hook() -> None:
            raise StorageUnavailable("blob store unavailable")

        batch.before_commit("sync", hook)
        return add_court("TJ-HOOK")(session, batch)

    committer = GroupCommitter(db)
    [result] = run_batch(committer, [breaks_the_batch])
    committer.close()
    assert isinstance(result, StorageUnavailable) and not isinstance(result, CommitUncertain)


def test_commit_lost_with_its_connection_is_uncertain_for_every_unit(db: Database) -> None:
    """The COMMIT itself fails (the connection drops while the server commits): the rows
    may be stored, so each unit hears CommitUncertain and must leave its files."""

    def lose_the_commit(conn: object) -> None:
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    committer = GroupCommitter(db)
    event.listen(db.engine, "commit", lose_the_commit)
    try:
        results = run_batch(committer, [add_court("TJ-A"), add_court("TJ-B")])
    finally:
        event.remove(db.engine, "commit", lose_the_commit)
        committer.close()
    assert all(isinstance(result, CommitUncertain) for result in results), results


def test_hooks_run_once_per_key_before_the_commit(db: Database) -> None:
    calls: list[str] = []

    def with_hook(code: str) -> Callable[[Session, Batch], str]:
        def work(session: Session, batch: Batch) -> str:
            batch.before_commit(("dir", "2026/11/25"), lambda: calls.append(code))
            return add_court(code)(session, batch)

        return work

    committer = GroupCommitter(db)
    run_batch(committer, [with_hook("TJ-A"), with_hook("TJ-B"), with_hook("TJ-C")])
    committer.close()
    assert calls == ["TJ-A"]


def test_close_drains_and_then_refuses(db: Database) -> None:
    committer = GroupCommitter(db)
    assert committer.run(add_court("TJ-A")) == "TJ-A"
    committer.close()
    committer.close()  # twice is harmless
    with pytest.raises(StorageUnavailable):
        committer.run(add_court("TJ-B"))
    assert court_codes(db) == ["TJ-A"]


def test_units_share_a_per_batch_object_for_one_hook(db: Database) -> None:
    flushed: list[list[str]] = []

    def gather(code: str) -> Callable[[Session, Batch], str]:
        def work(session: Session, batch: Batch) -> str:
            names: list[str] = batch.shared("names", list)
            if not names:
                batch.before_commit("names", lambda: flushed.append(list(names)))
            names.append(code)
            return add_court(code)(session, batch)

        return work

    committer = GroupCommitter(db)
    run_batch(committer, [gather("TJ-A"), gather("TJ-B"), gather("TJ-C")])
    committer.close()
    assert flushed == [["TJ-A", "TJ-B", "TJ-C"]]


@pytest.fixture
def statements(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[str, bool]]]:
    """(statement, executemany) for every statement sent: by the engine, or on SQLite by
    `SqliteWrites` on the driver's connection (the writer's hot statements)."""
    seen: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
               executemany: bool) -> None:  # fmt: skip
        seen.append((" ".join(statement.split()), executemany))

    driver_run = SqliteWrites._run

    def record_driver(self: SqliteWrites, compiled: Any, values: Any, many: bool,
                      read: Any) -> Any:  # fmt: skip
        seen.append((" ".join(compiled.sql.split()), many))
        return driver_run(self, compiled, values, many, read)

    monkeypatch.setattr(SqliteWrites, "_run", record_driver)
    event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine, "before_cursor_execute", record)


def test_a_batch_chains_its_audit_events_in_one_insert(
    db: Database, statements: list[tuple[str, bool]]
) -> None:
    committer = GroupCommitter(db, on_begin=lock_head)
    committer.run(add_court("TJ-FIRST"))  # the engine's first connection, outside the count
    statements.clear()
    run_batch(committer, [add_court(f"TJ-{i:02d}") for i in range(10)])
    committer.close()
    inserts = [many for sql, many in statements if sql.startswith("INSERT INTO audit_event")]
    moves = [sql for sql, _ in statements if sql.startswith("UPDATE audit_head")]
    assert inserts == [False, True]  # the gate's batch of one, then the ten in one executemany
    assert len(moves) == 2
    with db.reading() as session:
        report = verify_chain(AuditRepository(session))
        subjects = [e.subject for e in AuditRepository(session).page(0, 100)]
    assert report.ok and report.events == 12
    assert subjects == ["TJ-FIRST", "TJ-GATE", *(f"TJ-{i:02d}" for i in range(10))]


def test_outside_a_batch_an_event_is_written_at_once(db: Database) -> None:
    with db.transaction() as session:
        append_event(session, NOW, "court.added", actor="test", subject="TJ-NOW")
        assert [e.subject for e in AuditRepository(session).page(0, 10)] == ["TJ-NOW"]


def test_staged_items_are_flushed_once_in_unit_order_and_dropped_with_their_unit(
    db: Database,
) -> None:
    flushed: list[list[str]] = []

    def staging(code: str, fail: bool = False) -> Callable[[Session, Batch], str]:
        def work(session: Session, batch: Batch) -> str:
            batch.stage("codes", [code, code + "-bis"], flushed.append)
            if fail:
                raise ValueError("refused by the unit")
            return add_court(code)(session, batch)

        return work

    committer = GroupCommitter(db)
    results = run_batch(committer, [staging("TJ-A"), staging("TJ-X", fail=True), staging("TJ-B")])
    committer.close()
    assert isinstance(results[1], ValueError)
    assert flushed == [["TJ-A", "TJ-A-bis", "TJ-B", "TJ-B-bis"]]


def test_a_failed_flush_stores_nothing_of_the_batch(db: Database) -> None:
    def refuse(items: list[Any]) -> None:
        raise StorageUnavailable("the staged rows could not be written")

    def staging(session: Session, batch: Batch) -> str:
        batch.stage("rows", ["x"], refuse)
        return add_court("TJ-STAGE")(session, batch)

    committer = GroupCommitter(db)
    results = run_batch(committer, [add_court("TJ-A"), staging, add_court("TJ-B")])
    committer.close()
    assert all(isinstance(r, StorageUnavailable) for r in results), results
    assert court_codes(db) == ["TJ-GATE"]
    with db.reading() as session:
        assert [e.subject for e in AuditRepository(session).page(0, 10)] == ["TJ-GATE"]


def test_insert_later_writes_a_batchs_rows_in_one_executemany(
    db: Database, statements: list[tuple[str, bool]]
) -> None:
    courts = insert(table_of(Court))

    def staged(code: str) -> Callable[[Session, Batch], str]:
        def work(session: Session, batch: Batch) -> str:
            batch.insert_later(session, courts, [{"code": code, "name": code, "created_at": NOW}])
            return code

        return work

    committer = GroupCommitter(db)
    committer.run(add_court("TJ-FIRST"))
    statements.clear()
    run_batch(committer, [staged(f"TJ-{i:02d}") for i in range(5)])
    committer.close()
    inserts = [many for sql, many in statements if sql.startswith("INSERT INTO court")]
    assert inserts == [False, True]  # the gate's ORM insert, then the five staged at once
    assert court_codes(db) == sorted(["TJ-FIRST", "TJ-GATE", *(f"TJ-{i:02d}" for i in range(5))])


def test_receipts_queued_in_a_batch_are_one_insert_and_one_wake(
    db: Database, statements: list[tuple[str, bool]]
) -> None:
    woken: list[int] = []
    db.outbox_queued.subscribe(lambda: woken.append(1))

    def receipt(n: int) -> Callable[[Session, Batch], str]:
        def work(session: Session, batch: Batch) -> str:
            enqueue_later(session, kind="receipt", recipient=f"g{n}@famille.example",
                          now=NOW, values={"n": str(n)})  # fmt: skip
            return str(n)

        return work

    committer = GroupCommitter(db)
    committer.run(add_court("TJ-FIRST"))
    statements.clear()
    woken.clear()
    run_batch(committer, [receipt(n) for n in range(4)])
    committer.close()
    inserts = [many for sql, many in statements if sql.startswith("INSERT INTO outbox")]
    assert inserts == [True]
    assert len(woken) == 1  # the gate's batch queued nothing; the four wake the worker once
    with db.reading() as session:
        recipients = sorted(session.scalars(select(Outbox.recipient)))
    assert recipients == [f"g{n}@famille.example" for n in range(4)]


def test_a_receipt_outside_a_batch_is_written_at_once(db: Database) -> None:
    with db.transaction() as session:
        enqueue_later(session, kind="receipt", recipient="g@famille.example", now=NOW,
                      values={"n": "1"})  # fmt: skip
        assert session.scalars(select(Outbox.recipient)).all() == ["g@famille.example"]
