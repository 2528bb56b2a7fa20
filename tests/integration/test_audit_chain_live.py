"""A read transaction is one snapshot, on SQLite and on PostgreSQL: the audit chain verified
while other transactions append to it (a check on one node while another node works) raises
no false alarm, and the connection a read used writes normally afterwards."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select

from gateway.audit.chain import verify_chain
from gateway.storage import migrate
from gateway.storage.audit import AuditRepository, append_event
from gateway.storage.db import Database, Session
from gateway.storage.models import Court


def _courts(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Court)) or 0)


def test_a_read_sees_one_snapshot_and_its_connection_then_writes(db_url: str) -> None:
    db = Database.from_url(db_url, pool_size=1)  # one connection: the reads' and the writes'
    migrate.upgrade(db)
    now = datetime.now(UTC)
    try:
        with db.reading() as reader:
            before = _courts(reader)
            other = Database.from_url(db_url, pool_size=1)
            try:
                with other.transaction() as writer:
                    writer.add(Court(code="TJ-NEW", name="Nouveau", created_at=now))
            finally:
                other.dispose()
            assert _courts(reader) == before  # committed meanwhile, not in this snapshot
        with db.transaction() as session:  # the same pooled connection, writable again
            session.add(Court(code="TJ-AFTER", name="Après", created_at=now))
            assert _courts(session) == before + 2
    finally:
        db.dispose()


def test_verifying_while_events_are_appended_finds_no_problem(db: Database) -> None:
    with db.transaction() as session:
        append_event(session, datetime.now(UTC), "test.first", actor="test")
    stop = threading.Event()
    appended = 0

    def append() -> None:
        nonlocal appended
        while not stop.is_set():
            with db.transaction() as session:
                append_event(session, datetime.now(UTC), "test.live", actor="test")
            appended += 1

    writer = threading.Thread(target=append)
    writer.start()
    try:
        # PostgreSQL reads each statement at READ COMMITTED: an event committed between the
        # walk's last page and the head's read must not look like events missing at the end.
        reports = []
        while appended < 300 and len(reports) < 3000:
            with db.reading() as session:
                reports.append(verify_chain(AuditRepository(session)))
    finally:
        stop.set()
        writer.join(30)
    assert appended >= 300, appended  # the walk really ran beside the appends
    assert [r for r in reports if not r.ok] == []
    with db.reading() as session:
        final = verify_chain(AuditRepository(session))
    assert final.ok and final.events == appended + 1
