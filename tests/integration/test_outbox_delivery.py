"""The outbox worker against a real SMTP sink: delivery, retries, give-up, leases, TLS + AUTH."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from gateway.audit.chain import verify_chain
from gateway.outbox.compose import MailComposer
from gateway.outbox.queue import enqueue, pending_count
from gateway.outbox.templates import Templates
from gateway.outbox.worker import OutboxWorker
from gateway.settings import RelaySection
from gateway.storage import migrate
from gateway.storage.db import Database
from gateway.storage.models import AuditEvent, Outbox, OutboxAttempt
from tests.fixtures import smtpsink
from tests.fixtures.dkimkeys import generate_key
from tests.fixtures.smtpsink import SmtpSink, server_tls_context
from tests.fixtures.tlscert import make_self_signed

smtp_sink = smtpsink.smtp_sink  # the fixture, until conftest imports it for every module

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MESSAGE = (
    b"From: Passerelle du greffe <noreply@greffe.example>\r\n"
    b"To: tuteur@famille.example\r\n"
    b"Subject: Accuse de reception\r\n"
    b"\r\n"
    b"Numero de saisie : 7K3QD-M2X9A\r\n"
)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.from_url(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def relay_for(sink: SmtpSink, **options: object) -> RelaySection:
    values: dict[str, object] = {
        "host": sink.host,
        "port": sink.port,
        "timeout": 5.0,
        "give_up_after": timedelta(hours=6),
        "max_backoff": timedelta(minutes=10),
    }
    return RelaySection.model_validate({**values, **options})


def put(db: Database, clock: FakeClock, message: bytes = MESSAGE, kind: str = "receipt") -> int:
    with db.transaction() as session:
        row = enqueue(
            session,
            kind=kind,
            recipient="tuteur@famille.example",
            message=message,
            now=clock(),
            related_reference="TJ-PARIS-2026-000001/1",
        )
        return row.id


def row_of(db: Database, outbox_id: int) -> Outbox:
    with db.transaction() as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        return row


def attempts_of(db: Database, outbox_id: int) -> list[tuple[str, str]]:
    with db.transaction() as session:
        rows = session.scalars(
            select(OutboxAttempt)
            .where(OutboxAttempt.outbox_id == outbox_id)
            .order_by(OutboxAttempt.id)
        ).all()
        return [(attempt.result, attempt.detail) for attempt in rows]


def failure_events(db: Database) -> list[AuditEvent]:
    with db.transaction() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "outbox.failed")).all()
        )


async def test_outbox_worker_delivers_once_and_clears_message(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0

    [(mail_from, rcpt_tos, data)] = smtp_sink.wait_for(1)
    assert (mail_from, rcpt_tos, data) == (
        "noreply@greffe.example",
        ["tuteur@famille.example"],
        MESSAGE,
    )
    row = row_of(db, outbox_id)
    assert (row.status, row.message, row.sent_at, row.attempts) == ("sent", None, T0, 1)
    assert row.lease_until is None
    assert [result for result, _ in attempts_of(db, outbox_id)] == ["sent"]


async def test_outbox_worker_refused_451_retries_with_growing_delay_then_delivers_once(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    smtp_sink.refuse_with("451 4.3.0 Try again later")

    assert await worker.run_once() == 1
    assert row_of(db, outbox_id).next_attempt_at == T0 + timedelta(seconds=30)
    assert await worker.run_once() == 0  # not due yet
    clock.advance(seconds=30)
    assert await worker.run_once() == 1
    assert row_of(db, outbox_id).next_attempt_at == clock() + timedelta(seconds=60)
    smtp_sink.refuse_with(None)
    clock.advance(seconds=60)
    assert await worker.run_once() == 1
    clock.advance(hours=1)
    assert await worker.run_once() == 0

    assert len(smtp_sink.wait_for(1)) == 1
    assert smtp_sink.refusals == 2
    results = attempts_of(db, outbox_id)
    assert [result for result, _ in results] == ["temporary", "temporary", "sent"]
    assert results[0][1].startswith("451 4.3.0")
    row = row_of(db, outbox_id)
    assert (row.status, row.attempts, row.message) == ("sent", 3, None)


async def test_outbox_worker_relay_down_then_back(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    smtp_sink.stop()

    assert await worker.run_once() == 1
    row = row_of(db, outbox_id)
    assert (row.status, row.message) == ("pending", MESSAGE)
    [(result, detail)] = attempts_of(db, outbox_id)
    assert result == "temporary" and "Connect" in detail
    smtp_sink.start()
    clock.advance(seconds=30)
    assert await worker.run_once() == 1

    assert len(smtp_sink.wait_for(1)) == 1
    assert row_of(db, outbox_id).status == "sent"


async def test_outbox_worker_5xx_fails_after_one_attempt(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    smtp_sink.refuse_with("550 5.1.1 No such user")

    assert await worker.run_once() == 1
    clock.advance(days=1)
    assert await worker.run_once() == 0

    row = row_of(db, outbox_id)
    assert (row.status, row.attempts, row.message) == ("failed", 1, None)
    assert attempts_of(db, outbox_id) == [("permanent", "550 5.1.1 No such user")]
    [event] = failure_events(db)
    assert event.subject == "TJ-PARIS-2026-000001/1"
    assert event.data["reason"] == "permanent refusal" and event.data["outbox_id"] == outbox_id
    with db.transaction() as session:
        assert verify_chain(session).ok


async def test_outbox_worker_gives_up_after_age(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    worker = OutboxWorker(db, relay_for(smtp_sink, give_up_after="1h"), clock)
    smtp_sink.refuse_with("421 4.7.0 Busy")

    assert await worker.run_once() == 1
    clock.advance(minutes=59)
    assert await worker.run_once() == 1
    assert row_of(db, outbox_id).status == "pending"
    clock.advance(minutes=10)
    assert await worker.run_once() == 1

    row = row_of(db, outbox_id)
    assert (row.status, row.attempts, row.message) == ("failed", 3, None)
    [event] = failure_events(db)
    assert event.data["reason"] == "expired" and event.data["attempts"] == 3


async def test_outbox_leased_row_is_not_claimed_until_lease_ends(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    with db.transaction() as session:
        session.execute(
            update(Outbox)
            .where(Outbox.id == outbox_id)
            .values(lease_until=T0 + timedelta(minutes=10))
        )
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)

    assert await worker.run_once() == 0
    clock.advance(minutes=10)
    assert await worker.run_once() == 1
    assert len(smtp_sink.wait_for(1)) == 1


async def test_outbox_two_workers_never_send_the_same_row(
    db_url: str, db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    ids = {put(db, clock, MESSAGE.replace(b"7K3QD", f"{n:05d}".encode())) for n in range(12)}
    other_db = Database.from_url(db_url)
    try:
        first = OutboxWorker(db, relay_for(smtp_sink), clock, batch=5)
        second = OutboxWorker(other_db, relay_for(smtp_sink), clock, batch=5)
        counts: list[int] = []
        while sum(counts) < len(ids):
            batch = await asyncio.gather(first.run_once(), second.run_once())
            assert sum(batch) > 0
            counts.extend(batch)
    finally:
        other_db.dispose()

    received = smtp_sink.wait_for(len(ids))
    assert len(received) == len(ids) == len({data for _, _, data in received})
    with db.transaction() as session:
        assert pending_count(session) == 0
        attempts = session.scalars(select(OutboxAttempt.outbox_id)).all()
    assert sorted(attempts) == sorted(ids)


async def test_outbox_run_loop_wakes_and_stops(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, interval=60))
    await asyncio.sleep(0.05)

    def enqueue_elsewhere() -> None:  # as the ingestion pipeline does, in a worker thread
        put(db, clock)
        worker.wake()

    await asyncio.to_thread(enqueue_elsewhere)
    await asyncio.to_thread(smtp_sink.wait_for, 1, 5.0)  # well before the 60 s interval
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    with db.transaction() as session:
        assert pending_count(session) == 0


async def test_outbox_composed_receipt_arrives_dkim_valid(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    key = generate_key()
    composer = MailComposer(
        "greffe.example", "Greffe", "greffe", key.private_pem, Templates(tmp_path), None, clock
    )
    message = composer.compose(
        "rejection", "tuteur@famille.example", reference="R-1", reason="pièce illisible"
    )
    put(db, clock, message, kind="rejection")

    await OutboxWorker(db, relay_for(smtp_sink), clock).run_once()

    [(_, _, data)] = smtp_sink.wait_for(1)
    assert data == message
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: key.txt_record.encode())


@pytest.fixture(scope="module")
def relay_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    cert, key = make_self_signed(tmp_path_factory.mktemp("relay-tls"), "relay.test")
    return str(cert), str(key)


async def test_outbox_worker_starttls_and_auth(
    db: Database, clock: FakeClock, relay_cert: tuple[str, str]
) -> None:
    cert, key = relay_cert
    sink = SmtpSink(
        tls_context=server_tls_context(cert, key),
        require_starttls=True,
        authenticator=SmtpSink.authenticator("relay-user", "s3cret"),
        auth_required=True,
    )
    sink.start()
    try:
        client = ssl.create_default_context(cafile=cert)
        client.minimum_version = ssl.TLSVersion.TLSv1_2
        relay = relay_for(sink, starttls=True, username="relay-user", password=SecretStr("s3cret"))
        outbox_id = put(db, clock)

        assert await OutboxWorker(db, relay, clock, tls_context=client).run_once() == 1

        sink.wait_for(1)
        assert sink.tls_versions[0] in {"TLSv1.2", "TLSv1.3"}
        assert sink.logins[0] == "relay-user"
        assert row_of(db, outbox_id).status == "sent"
    finally:
        sink.close()


async def test_outbox_worker_refuses_untrusted_relay_certificate(
    db: Database, clock: FakeClock, relay_cert: tuple[str, str]
) -> None:
    sink = SmtpSink(tls_context=server_tls_context(*relay_cert), require_starttls=True)
    sink.start()
    try:
        outbox_id = put(db, clock)

        await OutboxWorker(db, relay_for(sink, starttls=True), clock).run_once()

        assert sink.messages == []
        [(result, _detail)] = attempts_of(db, outbox_id)
        assert result == "temporary"
        assert row_of(db, outbox_id).status == "pending"
    finally:
        sink.close()


def test_template_values_composed_at_delivery_and_cleared(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    composed: list[tuple[str, str, dict[str, str]]] = []
    broken = {"yes": True}

    def compose(kind: str, recipient: str, values: dict[str, str]) -> bytes:
        if broken["yes"]:
            raise KeyError("missing placeholder")  # a broken operator template
        composed.append((kind, recipient, values))
        return MESSAGE

    with db.transaction() as session:
        row_id = enqueue(
            session,
            kind="code",
            recipient="tuteur@famille.example",
            values={"code": "7K3QD-M2X9A"},
            now=clock(),
        ).id
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, compose=compose)
    asyncio.run(worker.run_once())
    with db.transaction() as session:
        row = session.get(Outbox, row_id)
        assert row is not None and row.status == "pending" and row.attempts == 1
        assert row.template_values == {"code": "7K3QD-M2X9A"}  # kept for the retry
    assert smtp_sink.messages == []
    broken["yes"] = False
    clock.advance(minutes=5)
    asyncio.run(worker.run_once())
    assert composed == [("code", "tuteur@famille.example", {"code": "7K3QD-M2X9A"})]
    assert len(smtp_sink.wait_for(1)) == 1
    with db.transaction() as session:
        row = session.get(Outbox, row_id)
        assert row is not None and row.status == "sent"
        assert row.template_values is None and row.message is None
