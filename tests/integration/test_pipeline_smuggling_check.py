"""The smuggling check on each channel: the adapter's word (SMTP's DATA scanner), else a count.

Through a real Dovecot a bare CR or LF never reaches the pipeline (it stores
CRLF lines), so the count of a channel without a scanner is exercised here,
on the pipeline and a real database, with the adapter's word beside it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from gateway.errors import BareLineEnding
from gateway.ingest.pipeline import Action, Context, Inbound, Outcome
from gateway.ingest.recipients import Recipient, Role
from gateway.model import Channel
from gateway.storage.db import Database
from gateway.storage.models import AuditEvent
from tests.fixtures.pipelinerig import SENDER, register_sender, submit_pipeline

CLEAN = b"From: t@exemple.fr\r\nTo: depot@g.example\r\nSubject: x\r\n\r\nBonjour\r\n"
BARE = CLEAN.replace(b"Bonjour\r\n", b"Bon\njour\r\n")


@pytest.fixture(autouse=True)
def registered(db: Database) -> None:
    register_sender(db)


def ingest(db: Database, raw: bytes, channel: Channel, seen: bool | None) -> list[bytes]:
    """Run one message through the pipeline; what its handler was given."""
    handled: list[bytes] = []

    def handler(ctx: Context) -> Outcome:
        handled.append(ctx.inbound.raw)
        return Outcome(Action.SUBMITTED, "REF")

    pipeline = submit_pipeline(db, handler)
    inbound = Inbound(
        raw, SENDER, Recipient(Role.SUBMIT, ""), channel, "127.0.0.1", datetime.now(UTC),
        bare_line_ending=seen,
    )  # fmt: skip
    try:
        asyncio.run(pipeline.ingest(inbound))
    finally:
        pipeline.close()
    return handled


def refusals(db: Database) -> list[tuple[str, str]]:
    with db.reading() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "message.refused")
        ).all()
        return [(event.actor.split(":")[0], event.data["reason"]) for event in events]


def test_a_channel_without_a_scanner_has_its_message_counted(db: Database) -> None:
    with pytest.raises(BareLineEnding):
        ingest(db, BARE, Channel.IMAP, None)
    assert refusals(db) == [("imap", "BareLineEnding")]
    assert ingest(db, CLEAN, Channel.IMAP, None) == [CLEAN]


def test_the_smtp_scanners_word_is_taken_without_counting_again(db: Database) -> None:
    with pytest.raises(BareLineEnding):
        ingest(db, BARE, Channel.SMTP, True)
    assert refusals(db) == [("smtp", "BareLineEnding")]
    # What the scanner found clean is not counted again (the scanner's own tests hold
    # its word equal to the count on random streams).
    assert ingest(db, BARE, Channel.SMTP, False) == [BARE]
