"""SQLite transactions: writers queue on the writer lock, readers never wait."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.errors import StorageUnavailable
from gateway.storage import migrate
from gateway.storage.db import Database, WriterLock
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
        assert done == []  # the second writer waits for the first
    thread.join(timeout=10)
    assert done and done[0] >= 0.25
    with db.reading() as session:
        assert sorted(session.scalars(select(Court.code))) == ["TJ-A", "TJ-B", "TJ-C"]
    db.dispose()


def _try_flock(path: Path) -> int:
    """Exit status of another process trying to take the writer lock without waiting."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    sys.exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], check=False).returncode


def test_writers_of_other_processes_queue_on_the_lock_file(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    db = Database.from_url(f"sqlite:///{tmp_path / 'g.db'}")
    migrate.upgrade(db)
    lock_file = tmp_path / "g.db-writer.lock"
    with db.transaction() as session:
        session.add(Court(code="TJ-A", name="A", created_at=datetime.now(UTC)))
        session.flush()
        assert _try_flock(lock_file) == 3  # held for the whole write transaction
    assert _try_flock(lock_file) == 0
    with db.reading() as session:  # readers never take it
        session.scalars(select(Court)).all()
        assert _try_flock(lock_file) == 0
    db.dispose()


def test_a_writer_gives_up_after_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "held.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: another "process"
    lock = WriterLock(path, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable), lock.hold():
        pass
    assert time.monotonic() - started >= 0.2
    fcntl.flock(fd, fcntl.LOCK_UN)
    with lock.hold():
        pass
    lock.close()
    os.close(fd)
