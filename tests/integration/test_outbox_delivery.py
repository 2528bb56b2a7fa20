"""The outbox worker against a real SMTP sink: delivery, retries, give-up, leases, TLS + AUTH."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from pydantic import SecretStr
from sqlalchemy import event, select, update

from gateway.audit.chain import verify_chain
from gateway.errors import StorageUnavailable
from gateway.outbox import worker as worker_module
from gateway.outbox.compose import MailComposer
from gateway.outbox.templates import Templates
from gateway.outbox.worker import Composed, Delivered, OutboxWorker, envelope_sender
from gateway.settings import RelaySection
from gateway.storage.audit import AuditRepository
from gateway.storage.db import Database
from gateway.storage.models import AuditEvent, Outbox, OutboxAttempt
from gateway.storage.outbox import enqueue, pending_count
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


def put(
    db: Database,
    clock: FakeClock,
    message: bytes = MESSAGE,
    kind: str = "receipt",
    recipient: str = "tuteur@famille.example",
) -> int:
    with db.transaction() as session:
        return enqueue(
            session,
            kind=kind,
            recipient=recipient,
            message=message,
            now=clock(),
            related_reference="TJ-PARIS-2026-000001/1",
        )


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
    counted: list[str] = []
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, count=counted.append)

    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert counted == ["sent"]  # gateway_outbox_deliveries_total{result="sent"}

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


async def test_outbox_worker_sends_dots_and_line_ends_as_aiosmtplib_would(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    """The DATA the worker writes itself (`send_data`): dots stuffed, lines in CRLF."""
    message = MESSAGE + b".\r\n..two dots\r\n.one\nbare LF\n.\rbare CR\rno last line end"
    put(db, clock, message)
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)

    assert await worker.run_once() == 1

    [(_mail_from, _rcpt_tos, data)] = smtp_sink.wait_for(1)
    assert data == MESSAGE + (
        b".\r\n..two dots\r\n.one\r\nbare LF\r\n.\r\nbare CR\r\nno last line end\r\n"
    )
    # The session is still in step: a second message on it goes through.
    put(db, clock)
    assert await worker.run_once() == 1
    assert smtp_sink.wait_for(2)[1][2] == MESSAGE


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
        assert verify_chain(AuditRepository(session)).ok


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
        "state", "tuteur@famille.example", reference="R-1", status="reçue", submissions="-"
    )
    put(db, clock, message, kind="state")

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

    def compose(kind: str, recipient: str, values: dict[str, str]) -> Composed:
        if broken["yes"]:
            raise KeyError("missing placeholder")  # a broken operator template
        composed.append((kind, recipient, values))
        return Composed(envelope_sender(MESSAGE), MESSAGE)

    with db.transaction() as session:
        row_id = enqueue(
            session,
            kind="code",
            recipient="tuteur@famille.example",
            values={"code": "7K3QD-M2X9A"},
            now=clock(),
        )
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


# --- Batches: shared relay connections, one record transaction -----------------------------

UNKNOWN = "inconnu@famille.example"


def numbered(n: int) -> bytes:
    """MESSAGE made distinct, so the sink can tell each one apart."""
    return MESSAGE.replace(b"7K3QD", f"{n:05d}".encode())


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the sink's thread to catch up (QUITs arrive after `run_once` returns)."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_outbox_batch_goes_over_at_most_concurrency_connections(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink, concurrency: int
) -> None:
    ids = [put(db, clock, numbered(n)) for n in range(10)]
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=concurrency)

    assert await worker.run_once() == 10

    received = smtp_sink.wait_for(10)
    assert len({data for _, _, data in received}) == 10
    assert {mail_from for mail_from, _, _ in received} == {"noreply@greffe.example"}
    assert 1 <= smtp_sink.connections <= concurrency
    await until(lambda: smtp_sink.quits == smtp_sink.connections)  # each one closed with QUIT
    assert {row_of(db, outbox_id).status for outbox_id in ids} == {"sent"}


async def test_outbox_keeps_relay_sessions_open_while_passes_find_work_then_quits(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=1,
                          local_hostname="greffe.example")
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop, interval=1.0))
    try:
        for n in range(3):  # three passes, each woken by a new row
            put(db, clock, numbered(n))
            worker.wake()
            await until(lambda n=n: len(smtp_sink.messages) == n + 1)  # type: ignore[misc]
        assert (smtp_sink.connections, smtp_sink.quits) == (1, 0)  # one session for all three
        # A pass that finds nothing due (after `interval`) ends the session with QUIT.
        await until(lambda: smtp_sink.quits == 1)
        put(db, clock, numbered(3))
        worker.wake()
        await until(lambda: len(smtp_sink.messages) == 4)
        assert smtp_sink.connections == 2
    finally:
        stop.set()
        await running
    await until(lambda: smtp_sink.quits == 2)  # stopping ends the open session too
    assert smtp_sink.ehlo_names == ["greffe.example"] * 4  # the gateway's name, not the FQDN


async def test_outbox_message_refused_421_on_a_used_session_goes_again_on_a_new_one(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    ids = [put(db, clock, numbered(n)) for n in range(5)]
    smtp_sink.messages_per_session = 2  # the third MAIL of a session: 421 and hang up
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=1)

    assert await worker.run_once() == 5

    received = smtp_sink.wait_for(5)
    assert len({data for _, _, data in received}) == 5
    assert smtp_sink.connections == 3
    for outbox_id in ids:  # none waits for a retry: each was sent at its first attempt
        assert [result for result, _ in attempts_of(db, outbox_id)] == ["sent"]


async def test_outbox_421_on_a_fresh_session_is_a_temporary_failure(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    outbox_id = put(db, clock)
    smtp_sink.messages_per_session = 0  # every MAIL: 421
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=1)

    assert await worker.run_once() == 1

    assert smtp_sink.connections == 1  # not tried again at once: the relay said no
    [(result, detail)] = attempts_of(db, outbox_id)
    assert (result, detail) == ("temporary", "421 4.7.0 Too many messages in this session")
    assert row_of(db, outbox_id).next_attempt_at == T0 + timedelta(seconds=30)


async def test_outbox_batch_outcomes_recorded_in_one_transaction(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    sent = [put(db, clock, numbered(n)) for n in range(6)]
    refused = put(db, clock, numbered(6), recipient=UNKNOWN)
    smtp_sink.recipient_refusals[UNKNOWN] = "550 5.1.1 No such user"
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    commits: list[object] = []

    def count(connection: object) -> None:
        commits.append(connection)

    event.listen(db.engine, "commit", count)
    try:
        assert await worker.run_once() == 7
    finally:
        event.remove(db.engine, "commit", count)

    assert len(commits) == 2  # the claim, then every outcome together
    assert [row_of(db, outbox_id).status for outbox_id in sent] == ["sent"] * 6
    assert row_of(db, refused).status == "failed"
    [failure] = failure_events(db)
    assert failure.data["outbox_id"] == refused
    with db.transaction() as session:
        assert verify_chain(AuditRepository(session)).ok


async def test_outbox_refused_recipient_does_not_stop_the_rest_of_the_batch(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    smtp_sink.recipient_refusals[UNKNOWN] = "550 5.1.1 No such user"
    first = [put(db, clock, numbered(n)) for n in range(2)]
    refused = put(db, clock, numbered(2), recipient=UNKNOWN)
    after = [put(db, clock, numbered(n)) for n in range(3, 5)]
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=1)

    assert await worker.run_once() == 5

    assert len(smtp_sink.wait_for(4)) == 4
    assert smtp_sink.connections == 1  # the refusal was RSET, the session went on
    assert {row_of(db, outbox_id).status for outbox_id in first + after} == {"sent"}
    assert attempts_of(db, refused) == [("permanent", "550 5.1.1 No such user")]
    row = row_of(db, refused)
    assert (row.status, row.attempts, row.message) == ("failed", 1, None)
    [failure] = failure_events(db)
    assert failure.data["outbox_id"] == refused and failure.data["reason"] == "permanent refusal"


async def test_outbox_relay_crash_mid_batch_leaves_the_rest_for_a_retry(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink
) -> None:
    ids = [put(db, clock, numbered(n)) for n in range(10)]
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=2)
    smtp_sink.crash_after(3)

    assert await worker.run_once() == 10

    assert smtp_sink.connections <= 2
    kept = {data for _, _, data in smtp_sink.messages}
    rows = {outbox_id: row_of(db, outbox_id) for outbox_id in ids}
    sent = {outbox_id for outbox_id, row in rows.items() if row.status == "sent"}
    assert 3 <= len(sent) == len(kept) < 10
    for outbox_id in set(ids) - sent:
        row = rows[outbox_id]
        assert (row.status, row.attempts, row.lease_until) == ("pending", 1, None)
        assert row.message is not None and row.next_attempt_at == T0 + timedelta(seconds=30)
        assert [result for result, _ in attempts_of(db, outbox_id)] == ["temporary"]

    smtp_sink.start()
    clock.advance(seconds=30)
    assert await worker.run_once() == 10 - len(sent)

    received = smtp_sink.wait_for(10)
    assert len(received) == len({data for _, _, data in received}) == 10  # each exactly once
    assert {row_of(db, outbox_id).status for outbox_id in ids} == {"sent"}


async def test_outbox_relay_down_fails_the_batch_without_trying_every_message(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [put(db, clock, numbered(n)) for n in range(8)]
    connect = aiosmtplib.SMTP.connect
    tries: list[int] = []

    async def counting_connect(client: aiosmtplib.SMTP, **options: object) -> object:
        tries.append(1)
        return await connect(client, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(aiosmtplib.SMTP, "connect", counting_connect)
    smtp_sink.stop()

    assert await OutboxWorker(db, relay_for(smtp_sink), clock, concurrency=2).run_once() == 8

    assert len(tries) == 2  # one per connection, not one per message
    for outbox_id in ids:
        [(result, detail)] = attempts_of(db, outbox_id)
        assert result == "temporary" and "Connect" in detail
        row = row_of(db, outbox_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.next_attempt_at == T0 + timedelta(seconds=30)


async def test_outbox_batch_record_is_retried_once_on_a_database_fault(
    db: Database, clock: FakeClock, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [put(db, clock, numbered(n)) for n in range(3)]
    worker = OutboxWorker(db, relay_for(smtp_sink), clock)
    record = worker._record_batch
    calls: list[int] = []

    def flaky(delivered: list[Delivered]) -> None:
        calls.append(len(delivered))
        if len(calls) == 1:
            raise StorageUnavailable("database unavailable")
        record(delivered)

    monkeypatch.setattr(worker_module, "RECORD_RETRY_PAUSE", 0.0)
    monkeypatch.setattr(worker, "_record_batch", flaky)

    assert await worker.run_once() == 3

    assert calls == [3, 3]
    assert {row_of(db, outbox_id).status for outbox_id in ids} == {"sent"}
    assert len(smtp_sink.wait_for(3)) == 3


async def test_outbox_unrecorded_batch_is_sent_again_once_the_lease_ends(
    db: Database,
    clock: FakeClock,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As if the process died between sending and recording: at least once, never lost.
    ids = [put(db, clock, numbered(n)) for n in range(3)]
    worker = OutboxWorker(db, relay_for(smtp_sink), clock, lease=timedelta(minutes=10))
    record = worker._record_batch

    def down(delivered: list[Delivered]) -> None:
        raise StorageUnavailable("database unavailable")

    monkeypatch.setattr(worker_module, "RECORD_RETRY_PAUSE", 0.0)
    monkeypatch.setattr(worker, "_record_batch", down)
    with caplog.at_level(logging.WARNING, logger="gateway.outbox"):
        assert await worker.run_once() == 3  # logged, not raised
    assert "3 outcome(s) not recorded" in caplog.text
    for outbox_id in ids:
        row = row_of(db, outbox_id)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.lease_until == T0 + timedelta(minutes=10)
    assert len(smtp_sink.wait_for(3)) == 3

    monkeypatch.setattr(worker, "_record_batch", record)
    assert await worker.run_once() == 0  # still leased
    clock.advance(minutes=10)
    assert await worker.run_once() == 3

    assert len(smtp_sink.wait_for(6)) == 6
    for outbox_id in ids:
        row = row_of(db, outbox_id)
        assert (row.status, row.attempts) == ("sent", 1)
