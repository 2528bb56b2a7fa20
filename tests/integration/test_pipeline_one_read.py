"""One read transaction per message: the registration read and a ReadsFirst handler's reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event

from gateway.errors import SenderNotRegistered
from gateway.ingest.mime import MimeLimits
from gateway.ingest.pipeline import Action, Context, Inbound, Outcome, Pipeline
from gateway.ingest.recipients import Recipient, Role
from gateway.ingest.senderauth import SenderVerdict
from gateway.model import Channel, Mailbox
from gateway.storage.db import Connection, Database
from gateway.storage.models import Court, Registration

SENDER = "t@exemple.fr"
RAW = b"From: t@exemple.fr\r\nTo: depot@g.example\r\nSubject: x\r\n\r\nBonjour\r\n"


class Authenticator:
    def authenticate(self, raw: bytes) -> SenderVerdict:
        return SenderVerdict(Mailbox.parse(SENDER), "pass", "exemple.fr", "s1", True, "")


class Handler:
    """A ReadsFirst handler recording what it saw in its read, and when the rest ran."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, ctx: Context) -> Outcome:
        raise AssertionError("the pipeline runs a ReadsFirst handler's read, then its rest")

    def read(self, connection: Connection, ctx: Context) -> Callable[[], Outcome]:
        self.seen.append(f"read in a transaction: {connection.in_transaction()}")
        self.seen.append(f"registrations: {len(ctx.registrations)}")
        return lambda: self._rest(connection)

    def _rest(self, connection: Connection) -> Outcome:
        self.seen.append(f"rest after the transaction: {connection.closed}")
        return Outcome(Action.SUBMITTED, "REF")


def ingest(db: Database, handler: Handler) -> Outcome:
    pipeline = Pipeline(
        db=db,
        authenticator=Authenticator(),  # type: ignore[arg-type]
        limits=MimeLimits(),
        max_message_bytes=10_000_000,
        id_domain="g.example",
        clock=lambda: datetime.now(UTC),
        handlers={Role.SUBMIT: handler},
    )
    inbound = Inbound(
        RAW, SENDER, Recipient(Role.SUBMIT, ""), Channel.SMTP, "127.0.0.1", datetime.now(UTC)
    )
    try:
        return asyncio.run(pipeline.ingest(inbound))
    finally:
        pipeline.close()


def count_transactions(db: Database) -> list[bool]:
    """Every transaction begun on the engine: True for read-only ones."""
    begun: list[bool] = []

    def on_begin(conn: Any) -> None:
        begun.append(bool(conn.get_execution_options().get("gateway_read_only")))

    event.listen(db.engine, "begin", on_begin)
    return begun


def test_pipeline_one_read_transaction_for_registrations_and_handler(db: Database) -> None:
    now = datetime.now(UTC)
    with db.transaction() as session:
        court = Court(code="TJ-LYON", name="Lyon", created_at=now)
        session.add(court)
        session.flush()
        session.add(
            Registration(
                court_id=court.id, measure="21/00123", address=SENDER, address_key=SENDER,
                status="active", registered_by="test", registered_at=now,
            )
        )  # fmt: skip
    begun = count_transactions(db)
    handler = Handler()
    outcome = ingest(db, handler)
    assert outcome.reference == "REF"
    assert handler.seen == [
        "read in a transaction: True",
        "registrations: 1",
        "rest after the transaction: True",
    ]
    assert begun == [True]  # one read transaction, nothing written


def test_pipeline_unregistered_sender_refused_before_the_handler_reads(db: Database) -> None:
    handler = Handler()
    with pytest.raises(SenderNotRegistered):
        ingest(db, handler)
    assert handler.seen == []
