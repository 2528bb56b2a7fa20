"""One read transaction per message: the sender's registration check and a ReadsFirst
handler's reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from gateway.errors import SenderNotRegistered
from gateway.ingest.pipeline import Action, Context, Inbound, Outcome
from gateway.ingest.recipients import Recipient, Role
from gateway.model import Channel
from gateway.storage.db import READ_ONLY, Database, Reads
from tests.fixtures.pipelinerig import SENDER, register_sender, submit_pipeline

RAW = b"From: t@exemple.fr\r\nTo: depot@g.example\r\nSubject: x\r\n\r\nBonjour\r\n"


class Handler:
    """A ReadsFirst handler recording, in the transaction log, when its read and its rest ran."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def __call__(self, ctx: Context) -> Outcome:
        raise AssertionError("the pipeline runs a ReadsFirst handler's read, then its rest")

    def read(self, reads: Reads, ctx: Context) -> Callable[[], Outcome]:
        self.seen.append(f"read: registered={ctx.registered}")
        return self._rest

    def _rest(self) -> Outcome:
        self.seen.append("rest")
        return Outcome(Action.SUBMITTED, "REF")


def ingest(db: Database, handler: Handler) -> Outcome:
    pipeline = submit_pipeline(db, handler)
    inbound = Inbound(
        RAW, SENDER, Recipient(Role.SUBMIT, ""), Channel.SMTP, "127.0.0.1", datetime.now(UTC)
    )
    try:
        return asyncio.run(pipeline.ingest(inbound))
    finally:
        pipeline.close()


def log_transactions(db: Database, log: list[str]) -> None:
    """Every transaction begun ("begin read", "begin write") and ended ("end"), in `log`.

    On SQLite the accept path's reads bypass Core, so the statements are
    traced on the driver's connections; on PostgreSQL Core's events tell.
    """
    if db.is_sqlite:
        db.engine.dispose()  # new connections, so that each one gets the trace

        def trace(sql: str) -> None:
            if sql.startswith("BEGIN"):
                log.append("begin write" if "IMMEDIATE" in sql else "begin read")
            elif sql in ("COMMIT", "ROLLBACK"):
                log.append("end")

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.set_trace_callback(trace)

        event.listen(db.engine, "connect", on_connect)
        return

    def on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY)
        log.append("begin read" if read_only else "begin write")

    event.listen(db.engine, "begin", on_begin)
    event.listen(db.engine, "commit", lambda _conn: log.append("end"))
    event.listen(db.engine, "rollback", lambda _conn: log.append("end"))


def test_pipeline_one_read_transaction_for_registrations_and_handler(db: Database) -> None:
    register_sender(db)
    log: list[str] = []
    log_transactions(db, log)
    outcome = ingest(db, Handler(log))
    assert outcome.reference == "REF"
    # One read transaction, nothing written; the handler's read in it, its rest after it.
    assert log == ["begin read", "read: registered=True", "end", "rest"]


def test_pipeline_unregistered_sender_refused_before_the_handler_reads(db: Database) -> None:
    log: list[str] = []
    with pytest.raises(SenderNotRegistered):
        ingest(db, Handler(log))
    assert not any(entry.startswith(("read", "rest")) for entry in log)
