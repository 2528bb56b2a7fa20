"""On PostgreSQL a mail queued by any node wakes every node's outbox (LISTEN/NOTIFY), no polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from gateway.app import OUTBOX_POLL
from gateway.lifecycle import LoopingPart
from gateway.storage import migrate
from gateway.storage.db import Database
from gateway.storage.notify import OutboxListener, listen_url
from gateway.storage.outbox import enqueue, pending_count
from tests.conftest import PostgresCluster
from tests.fixtures.gatewayserver import GatewayFactory
from tests.fixtures.smtpsink import SmtpSink

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    database = Database.from_url(postgres_cluster.create_database())
    migrate.upgrade(database)
    yield database
    database.dispose()


async def test_outbox_notify_wakes_the_listener_only_when_the_queueing_commit_lands(
    pg: Database,
) -> None:
    woken: list[float] = []
    listener = OutboxListener(listen_url(pg.engine), lambda: woken.append(time.monotonic()))
    part = LoopingPart("outbox-listener", listener.run)
    await part.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        await asyncio.sleep(0.2)
        woken.clear()  # the wake-up for rows queued before listening

        def rolled_back() -> None:
            with pytest.raises(RuntimeError), pg.transaction() as session:
                enqueue(session, kind="code", recipient="a@b.example", values={"c": "1"},
                        now=_now())  # fmt: skip
                raise RuntimeError("the queueing transaction fails")

        await asyncio.to_thread(rolled_back)
        await asyncio.sleep(0.5)
        assert woken == []  # nothing committed, nothing announced

        def committed() -> None:
            with pg.transaction() as session:
                enqueue(session, kind="code", recipient="a@b.example", values={"c": "1"},
                        now=_now())  # fmt: skip

        sent_at = time.monotonic()
        await asyncio.to_thread(committed)
        for _ in range(50):
            if woken:
                break
            await asyncio.sleep(0.05)
        assert woken and woken[0] - sent_at < 2.0
    finally:
        await part.stop(5)


def test_outbox_notify_another_node_queues_and_this_node_delivers_without_polling(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, db_url: str
) -> None:
    """What another node queues is sent at once, well before this node's next poll (5 s)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite wakes the worker in process")
    gateway_factory(
        {"GATEWAY__RELAY__HOST": "127.0.0.1", "GATEWAY__RELAY__PORT": str(smtp_sink.port)}
    )
    other = Database.from_url(db_url)  # another node: its own engine, the same database
    try:
        time.sleep(1.5)  # the outbox has looked once and idles until its next poll
        queued_at = time.monotonic()
        with other.transaction() as session:
            enqueue(session, kind="code", recipient="tuteur@exemple.fr",
                    values={"court": "TJ-LYON", "measure": "1", "kind": "requête",
                            "reference": "TJ-LYON-2026-000001", "code": "7K3QD-M2X9A",
                            "expires_at": "01/01/2027 00:00 UTC"},
                    now=_now())  # fmt: skip
        received = smtp_sink.wait_for(1, timeout=10)
        assert time.monotonic() - queued_at < OUTBOX_POLL / 2  # woken, not polled
        assert received[0][1] == ["tuteur@exemple.fr"]
        for _ in range(100):  # the attempt is recorded just after the relay's 250
            with other.reading() as session:
                if pending_count(session) == 0:
                    break
            time.sleep(0.05)
        with other.reading() as session:
            assert pending_count(session) == 0
    finally:
        other.dispose()


def _now() -> datetime:
    return datetime.now(UTC)
