"""Two `gateway serve` nodes on one PostgreSQL and one S3 bucket, one SIGKILLed during the load.

Each node has its own data directory (copies of the keys and the server
secret, as a second host would) and shares the database and the bucket.
Clients spread their filings over both nodes and re-send to the other one
when a node refuses or cuts them off.  Node A is killed once a third of the
filings are answered and stays down: node B takes everything after that,
and takes over the outbox rows A had claimed once A's lease runs out.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.storage.db import Database
from gateway.storage.models import Outbox
from tests.fixtures.dkimkeys import DkimKey, generate_key
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.loaddriver import (
    Letter,
    compose_letters,
    drive,
    verify_audit_chain,
    verify_check,
    verify_decrypts,
    verify_stored_once,
)
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.seaweed import SeaweedServer
from tests.fixtures.serveproc import (
    COURT,
    SELECTOR,
    SENDER_DOMAIN,
    GatewayHome,
    ServeNode,
    base_env,
    request_codes,
)
from tests.fixtures.smtpsink import SmtpSink

pytestmark = pytest.mark.postgres

MEASURES = ["21/00123", "21/00124", "21/00125", "21/00126"]
LETTERS = 200
LEASE = 3.0
REFERENCE_RE = re.compile(rf"{COURT}-\d{{4}}-\d{{6}}/\d+")


@pytest.fixture
def dkim(dns_server: DnsServer) -> DkimKey:
    key = generate_key()
    dns_server.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [key.txt_record]
    return key


@pytest.fixture
def nodes(
    tmp_path: Path,
    dns_server: DnsServer,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    postgres_cluster: PostgresCluster,
    seaweed: SeaweedServer,
) -> Iterator[tuple[ServeNode, ServeNode]]:
    env = {
        **base_env(dns_server, smtp_sink),
        **seaweed.env(f"two-{uuid.uuid4().hex[:10]}"),
        "GATEWAY__DATABASE__URL": postgres_cluster.create_database(),
        "GATEWAY__RELAY__LEASE": f"{LEASE:.0f}s",
    }
    first = GatewayHome.create(tmp_path / "a", env)
    first.set_up_court(court_key.armored_public, MEASURES)
    second = first.clone(tmp_path / "b")
    node_a, node_b = first.node("a"), second.node("b")
    try:
        node_a.start()
        node_b.start()
        yield node_a, node_b
    finally:
        node_a.stop()
        node_b.stop()


def receipt_references(sink: SmtpSink, start: int) -> Counter[str]:
    """How many receipts the relay got for each submission reference."""
    counted: Counter[str] = Counter()
    for _sender, _rcpts, data in sink.messages[start:]:
        found = {
            ref for part in _texts(message_from_bytes(data)) for ref in REFERENCE_RE.findall(part)
        }
        counted.update(found)
    return counted


def receipt_rows(db: Database) -> dict[str, Outbox]:
    """The receipt rows of the outbox, by the reference of the submission they answer."""
    with db.reading() as session:
        rows = {
            row.related_reference: row
            for row in session.scalars(select(Outbox).where(Outbox.kind == "receipt"))
            if row.related_reference is not None
        }
        session.expunge_all()
    return rows


def _texts(message: Message) -> list[str]:
    texts = []
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode("utf-8", "replace"))
    return texts


def kill_when_a_third_is_answered(
    node: ServeNode,
    letters: list[Letter],
    killed: list[set[int]],
    probe: ServeNode,
    done: threading.Event,
) -> None:
    """SIGKILL node A mid-load; note the outbox rows claimed then (they may be sent twice)."""
    while sum(letter.reference is not None for letter in letters) < len(letters) // 3:
        if done.wait(0.05):
            return
    node.kill()
    services = probe.home.services()
    try:
        with services.db.reading() as session:
            claimed = session.scalars(
                select(Outbox.id).where(Outbox.status == "pending", Outbox.lease_until.is_not(None))
            )
            killed.append(set(claimed))
    finally:
        services.close()


def test_two_nodes_one_killed_every_filing_stored_once_every_receipt_sent(
    nodes: tuple[ServeNode, ServeNode],
    dkim: DkimKey,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    tmp_path: Path,
) -> None:
    node_a, node_b = nodes
    codes = request_codes(node_a.smtp_port, dkim, smtp_sink, MEASURES)
    before = len(smtp_sink.messages)
    letters = compose_letters(dkim, codes, LETTERS)
    in_doubt: list[set[int]] = []
    done = threading.Event()
    killer = threading.Thread(
        target=kill_when_a_third_is_answered,
        args=(node_a, letters, in_doubt, node_b, done),
        name="killer",
    )
    killer.start()
    try:
        report = drive([node_a.smtp_port, node_b.smtp_port], letters, clients=8)
    finally:
        done.set()
        killer.join()
    print(f"{report.seconds:.1f}s, replies {dict(report.replies)}")
    assert node_a.kills == 1 and node_b.alive
    assert report.replies["lost"] > 0

    services = node_b.home.services()
    try:
        by_reference = verify_stored_once(services.db, letters)
        # Both nodes took filings: A before it was killed, B all along.
        for node in (node_a, node_b):
            assert 'reply="250 2.0.0"' in node.log(), node.name
        verify_audit_chain(services.db)
        # Every receipt reaches the relay: node B sends node A's claimed rows once A's
        # lease has run out. Only a row A had claimed when it died may arrive twice.
        # A row is marked sent after the relay's 250, so the sink may hold a receipt whose
        # row is still pending for a moment: wait for both.
        deadline = time.monotonic() + 90
        while True:
            received = receipt_references(smtp_sink, before)
            rows = receipt_rows(services.db)
            all_sent = {row.status for row in rows.values()} == {"sent"}
            if (set(by_reference) <= set(received) and all_sent) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        missing = set(by_reference) - set(received)
        assert not missing, f"{len(missing)} receipts never sent"
        assert {row.status for row in rows.values()} == {"sent"}
        twice = {ref for ref, count in received.items() if count > 1}
        assert all(rows[ref].id in in_doubt[0] for ref in twice), (twice, in_doubt)
        print(f"receipts: {len(received)}, sent twice (claimed by the killed node): {len(twice)}")
        verify_check(services.db, services.blobs, services.clock())
        verify_decrypts(services.db, services.blobs, court_key.gnupghome, letters, tmp_path / "x")
    finally:
        services.close()
