"""The group commit's hot writes: what `writes_of(session)` stores is what Core stores.

On SQLite the writes run on the driver's connection (`SqliteWrites`), in
the session's transaction: the same SQL, every value bound through its
column type's own processor, so the bytes in the file are the ones Core
writes, and the driver's errors are raised as Core raises them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from gateway.errors import AlreadyStored
from gateway.storage.audit import INSERT_EVENT, MOVE_HEAD, READ_HEAD
from gateway.storage.db import Database, SqliteWrites, Writes, sqlite_connection, writes_of
from gateway.storage.imap import _upsert_statement
from gateway.storage.models import (
    AuditEvent,
    AuditHead,
    Blob,
    Code,
    Document,
    ImapMessage,
    Outbox,
    Request,
    Submission,
    table_of,
)
from gateway.storage.outbox import INSERT_OUTBOX_ROWS
from gateway.storage.requests import CONSUME_CODE, COUNT_SUBMISSION
from gateway.storage.submissions import (
    INSERT_BLOBS,
    INSERT_DOCUMENTS,
    INSERT_SUBMISSION,
    NewSubmission,
    SubmissionRepository,
)
from tests.fixtures.storedrows import NOW, PARIS_JUST_BEFORE, fill

TABLES = [table_of(m) for m in (Code, Request, Submission, Blob, Document, Outbox, AuditEvent,
                                AuditHead, ImapMessage)]  # fmt: skip
SUBMISSION = {
    "reference": "R-1/2", "request_id": 1, "number": 2, "channel": "smtp",
    "message_id_sha256": "n" * 64, "raw_sha256": "s" * 64, "size": 5120,
    "received_at": PARIS_JUST_BEFORE, "registration_id": 1, "credential_id": None,
    "auth_results": {"dkim": "pass", "chemin": ["é", 1]}, "raw_blob": "raw-2",
    "manifest_blob": "manifest-2",
}  # fmt: skip

# Each hot statement the writer runs, with values of every kind its columns hold:
# timestamps in and out of UTC, JSON, NULL, integers, a RETURNING.
WRITES: list[tuple[str, Callable[[Writes], Any]]] = [
    ("consume", lambda w: w.count(CONSUME_CODE, {"code_id": 1, "now": PARIS_JUST_BEFORE,
                                                  "used_at": PARIS_JUST_BEFORE})),
    ("consume expired", lambda w: w.count(CONSUME_CODE, {
        "code_id": 1, "now": NOW + timedelta(hours=48), "used_at": NOW})),
    ("count", lambda w: w.one(COUNT_SUBMISSION, {"request_id": 1, "now": PARIS_JUST_BEFORE})),
    ("insert", lambda w: w.one(INSERT_SUBMISSION, SUBMISSION)),
    ("blobs", lambda w: w.many(INSERT_BLOBS, [
        {"key": f"raw-{i}", "kind": "raw", "sha256": str(i) * 64, "size": i, "created_at": NOW}
        for i in range(2)])),
    ("one blob", lambda w: w.many(INSERT_BLOBS, [
        {"key": "doc-1", "kind": "document", "sha256": "d" * 64, "size": 3,
         "created_at": PARIS_JUST_BEFORE}])),
    ("documents", lambda w: w.many(INSERT_DOCUMENTS, [
        {"submission_id": 1, "idx": i, "detected_type": "application/pdf", "size": 3,
         "sha256": "d" * 64, "blob": "doc-1", "warnings": warnings}
        for i, warnings in enumerate([None, ["pdf-javascript"]])])),
    ("outbox", lambda w: w.many(INSERT_OUTBOX_ROWS, [
        {"kind": "receipt", "recipient": "tuteur@exemple.fr", "message": None,
         "template_values": {"court": "TJ-LYON", "documents": "a.pdf — 3 octets"},
         "status": "pending", "attempts": 0, "created_at": NOW, "next_attempt_at": NOW,
         "related_reference": "R-1/2"}] * 2)),
    ("events", lambda w: w.many(INSERT_EVENT, [
        {"seq": seq, "at": PARIS_JUST_BEFORE, "action": "message.accepted", "actor": "smtp:t",
         "subject": "R-1/2", "data": {"documents": 1}, "prev_sha256": "0" * 64,
         "sha256": f"{seq}" * 64} for seq in (1, 2)])),
    ("head", lambda w: w.count(MOVE_HEAD, {"seq": 2, "sha": "2" * 64})),
    ("head read", lambda w: w.first(READ_HEAD, {})),
    # The IMAP puller's state rows: inserted, then updated (the submission id kept).
    ("imap stored", lambda w: w.many(_upsert_statement(w_dialect(w)), [
        {"mailbox": "m", "folder": "INBOX", "uidvalidity": 7, "uid": uid, "state": "stored",
         "raw_sha256": "s" * 64, "submission_id": 1, "updated_at": NOW} for uid in (1, 2)])),
    ("imap stripped", lambda w: w.many(_upsert_statement(w_dialect(w)), [
        {"mailbox": "m", "folder": "INBOX", "uidvalidity": 7, "uid": 1, "state": "stripped",
         "raw_sha256": "s" * 64, "submission_id": None, "updated_at": PARIS_JUST_BEFORE}])),
]  # fmt: skip


def w_dialect(writes: Writes) -> str:
    return "sqlite" if isinstance(writes, SqliteWrites) else writes.connection.dialect.name


def _everything(table: str) -> str:
    return f"SELECT * FROM {table} ORDER BY 1"  # noqa: S608 (our own tables' names)


def _run_and_dump(db: Database, writes: Callable[[Session], Writes]) -> tuple[Any, Any, Any]:
    """Every write's result, then the tables as Core reads them and as the file holds them."""
    with Session(db.engine) as session, session.begin():
        results = {name: write(writes(session)) for name, write in WRITES}
        connection = session.connection()
        core = {t.name: connection.execute(select(t).order_by(*t.primary_key)).all()
                for t in TABLES}  # fmt: skip
        stored = None
        if db.is_sqlite:
            raw = sqlite_connection(connection)
            stored = {t.name: raw.execute(_everything(t.name)).fetchall() for t in TABLES}
        session.rollback()
    return results, core, stored


def test_writes_store_what_core_stores(db: Database) -> None:
    fill(db)
    by_core = _run_and_dump(db, lambda session: Writes(session.connection()))
    # On PostgreSQL the writes are Core's (and a sequence does not roll back: ids differ).
    for _ in range(2 if db.is_sqlite else 0):  # compiled, then from the cache
        assert _run_and_dump(db, writes_of) == by_core
    results, core, _ = by_core
    assert results["consume"] == 1 and results["consume expired"] == 0
    assert results["count"] == ("R-1", 1) and results["insert"] == (2,)
    assert [c.use_count for c in core["code"]] == [1]
    assert core["submission"][1].received_at == PARIS_JUST_BEFORE
    assert core["submission"][1].auth_results == SUBMISSION["auth_results"]
    assert [d.warnings for d in core["document"]] == [None, ["pdf-javascript"]]
    assert len(core["outbox"]) == 2 and core["audit_head"][0].seq == 2
    assert results["head read"] == (2, "2" * 64)
    assert [(m.uid, m.state, m.submission_id) for m in core["imap_message"]] == [
        (1, "stripped", 1), (2, "stored", 1)]


def test_the_writes_on_sqlite_are_the_drivers(db: Database) -> None:
    with Session(db.engine) as session, session.begin():
        assert isinstance(writes_of(session), SqliteWrites) == db.is_sqlite


def test_a_unique_violation_is_integrity_error_and_already_stored(db: Database) -> None:
    fill(db)
    with Session(db.engine) as session, session.begin():
        with pytest.raises(IntegrityError), session.begin_nested():
            writes_of(session).one(INSERT_SUBMISSION, {**SUBMISSION, "raw_blob": "b"})
            writes_of(session).one(INSERT_SUBMISSION, {**SUBMISSION, "reference": "R-1/3",
                                                      "number": 3})  # fmt: skip
        duplicate = NewSubmission(**{**SUBMISSION, "message_id_sha256": "m" * 64,
                                     "raw_sha256": "r" * 64})  # fmt: skip
        with pytest.raises(AlreadyStored), session.begin_nested():
            SubmissionRepository(session).add(duplicate, [], [], NOW)
        # The transaction goes on after its savepoints were rolled back.
        assert writes_of(session).count(MOVE_HEAD, {"seq": 7, "sha": "7" * 64}) == 1


def test_a_driver_failure_is_raised_as_core_raises_it(db: Database) -> None:
    absent = Table("absent", MetaData(), Column("id", Integer))
    raised = []
    with Session(db.engine) as session, session.begin():
        for writes in (lambda: Writes(session.connection()), lambda: writes_of(session)):
            with pytest.raises(DBAPIError) as failure, session.begin_nested():
                writes().many(insert(absent), [{"id": 1}, {"id": 2}])
            raised.append(type(failure.value))
        assert writes_of(session).count(MOVE_HEAD, {"seq": 1, "sha": "1" * 64}) == 1
    assert raised[0] is raised[1]
    if db.is_sqlite:
        assert raised[0] is OperationalError  # what the writer reads as a lost database


def test_sqlite_writes_refuse_a_statement_with_python_defaults(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SqliteWrites only")
    table = Table("defaulted", MetaData(), Column("id", Integer, primary_key=True),
                  Column("label", String, default=lambda: "computed at each row"))  # fmt: skip
    with Session(db.engine) as session, session.begin(), pytest.raises(TypeError):
        writes_of(session).many(insert(table), [{"id": 1}])
