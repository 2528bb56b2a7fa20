"""IMAP pull at scale and under contention: 1,000 messages, two pullers on one PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import select

from gateway.app import Services
from gateway.imap.puller import PassSummary
from gateway.imap.stub import STUB_HEADER
from gateway.imap.watch import ImapSeams
from gateway.storage.imap import ImapState, MessageKey
from gateway.storage.models import ImapCursor
from tests.fixtures.dovecot import Dovecot, runner, states, submission_message, submissions
from tests.fixtures.gatewayserver import World

pytestmark = pytest.mark.dovecot


class _Counter:
    def __init__(self) -> None:
        self.totals: list[int] = []
        self.done = 0

    def total(self, count: int) -> None:
        self.totals.append(count)

    def advance(self, count: int) -> None:
        self.done += count


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_imap_thousand_message_mailbox_in_batches(world: World, dovecot: Dovecot) -> None:
    services = world.gw.services
    raws = [
        (
            f"From: inconnu{i}@exemple.fr\r\nTo: depot@greffe.example\r\n"
            f"Message-ID: <m{i}@exemple.fr>\r\nSubject: envoi {i}\r\n\r\n"
            + "ligne de texte\r\n"
            * 50
        ).encode()
        for i in range(1000)
    ]
    dovecot.write_maildir(raws)
    progress = _Counter()
    cursors: set[int] = set()
    state = ImapState(services.db, services.clock)

    def watch_cursor(reached: str, key: MessageKey) -> None:
        if reached == "quarantined":
            cursor = state.cursor(key.mailbox, key.folder)
            assert cursor is not None
            cursors.add(cursor[1])

    started = time.monotonic()

    seams = ImapSeams(batch_size=100, checkpoint=watch_cursor)
    summary = await runner(services, dovecot, seams).pull_once(progress)

    elapsed = time.monotonic() - started
    assert (summary.examined, summary.quarantined, summary.deferred) == (1000, 1000, 0)
    assert progress.totals == [1000] and progress.done == 1000
    assert cursors == set(range(0, 1000, 100))  # committed after each batch of a hundred
    assert dovecot.messages() == []
    assert len(dovecot.messages("Quarantine")) == 1000
    with services.db.transaction() as session:
        cursor = session.scalars(select(ImapCursor)).one()
        assert cursor.last_uid == 1000
    assert elapsed < 60, elapsed


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_imap_two_pullers_on_one_postgres_never_overlap(
    world: World, dovecot: Dovecot
) -> None:
    code = world.request_code()
    for index in range(6):
        dovecot.append(submission_message(world, code, body=f"envoi {index}\n"))
    # A second gateway process: its own Services, its own engine, the same database.
    other = Services(world.gw.services.settings, clock=world.gw.clock)
    second: list[PassSummary] = []

    def contend(reached: str, key: MessageKey) -> None:
        if reached == "stored" and not second:  # the first puller is mid-pass: try the other
            thread = threading.Thread(
                target=lambda: second.append(asyncio.run(runner(other, dovecot).pull_once()))
            )
            thread.start()
            thread.join(30)

    try:
        first = await runner(world.gw.services, dovecot, ImapSeams(checkpoint=contend)).pull_once()
        assert second and second[0].busy and second[0].examined == 0
        assert (first.stored, first.stripped) == (6, 6)

        # Once the first has finished, the other may pull: nothing is left but stubs.
        after = await runner(other, dovecot).pull_once()
        assert not after.busy and (after.examined, after.skipped) == (0, 6)
    finally:
        other.close()
    assert len(submissions(world.gw.services)) == 6
    assert states(world.gw.services) == ["stripped"] * 6
    stubs = [raw for _uid, _head, raw in dovecot.messages()]
    assert len(stubs) == 6 and all(STUB_HEADER.encode() in s for s in stubs)


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_imap_two_pullers_racing_store_each_message_once(
    world: World, dovecot: Dovecot
) -> None:
    code = world.request_code()
    for index in range(8):
        dovecot.append(submission_message(world, code, body=f"envoi {index}\n"))
    other = Services(world.gw.services.settings, clock=world.gw.clock)

    def in_thread(services: Services) -> PassSummary:
        return asyncio.run(runner(services, dovecot).pull_once())

    try:
        results = await asyncio.gather(
            asyncio.to_thread(in_thread, world.gw.services), asyncio.to_thread(in_thread, other)
        )
    finally:
        other.close()
    assert sum(r.stored for r in results) == 8
    assert len(submissions(world.gw.services)) == 8
    assert len(dovecot.messages()) == 8  # eight stubs, no original, no duplicate stub
