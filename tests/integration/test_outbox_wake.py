"""A commit that queued outgoing mail wakes this process's outbox; a rollback does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.storage.db import Database
from gateway.storage.outbox import enqueue, pending_count

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _queue(database: Database) -> None:
    with database.transaction() as session:
        enqueue(session, kind="code", recipient="a@b.example", now=NOW, values={"code": "X"})


def test_outbox_queued_fires_after_the_commit_that_queued_mail(db: Database) -> None:
    woken: list[int] = []
    unsubscribe = db.outbox_queued.subscribe(lambda: woken.append(1))
    _queue(db)
    assert woken == [1]
    with db.transaction():
        pass  # a transaction that queued nothing
    assert woken == [1]
    unsubscribe()
    _queue(db)
    assert woken == [1]


def test_outbox_queued_not_fired_when_the_transaction_rolls_back(db: Database) -> None:
    woken: list[int] = []
    db.outbox_queued.subscribe(lambda: woken.append(1))
    with pytest.raises(RuntimeError), db.transaction() as session:
        enqueue(session, kind="code", recipient="a@b.example", now=NOW, values={"code": "X"})
        raise RuntimeError("the work failed after queuing")
    assert woken == []


def test_outbox_wake_failure_never_fails_the_committed_work(db: Database) -> None:
    def broken() -> None:
        raise OSError("the worker's loop is gone")

    db.outbox_queued.subscribe(broken)
    _queue(db)  # no exception: the row is committed and the poll will find it
    with db.reading() as session:
        assert pending_count(session) == 1


