"""Transactions on SQLite: writers queue on BEGIN IMMEDIATE, readers never take the write lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import select

from gateway.storage import migrate
from gateway.storage.db import Database
from gateway.storage.models import Court


def test_reader_does_not_block_writer_and_writers_queue(tmp_path: Path) -> None:
    db = Database.from_url(f"sqlite:///{tmp_path / 'g.db'}")
    migrate.upgrade(db)
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    with db.reading() as reader:
        reader.scalars(select(Court)).all()  # a read transaction is open ...
        with db.transaction() as writer:  # ... and a writer still gets in at once
            writer.add(Court(code="TJ-A", name="A", created_at=now))
    done: list[float] = []

    def second_writer() -> None:
        started = time.monotonic()
        with db.transaction() as session:
            session.add(Court(code="TJ-B", name="B", created_at=now))
        done.append(time.monotonic() - started)

    with db.transaction() as first:
        first.add(Court(code="TJ-C", name="C", created_at=now))
        first.flush()  # BEGIN IMMEDIATE happens with the first statement
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)
        assert done == []  # BEGIN IMMEDIATE: the second writer waits for the first
    thread.join(timeout=10)
    assert done and done[0] >= 0.25
    with db.reading() as session:
        assert sorted(session.scalars(select(Court.code))) == ["TJ-A", "TJ-B", "TJ-C"]
    db.dispose()
