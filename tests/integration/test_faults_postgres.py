"""PostgreSQL crashes in the middle of a load: 451 while it is down, every filing stored once after.

A real `gateway serve` on a throwaway cluster of the test's own takes filings
from eight re-sending clients; twice during the load the cluster is stopped
with `pg_ctl stop -m immediate` (every connection cut, crash recovery on the
next start) and started again a few seconds later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
from tests.fixtures.postgres import PostgresCluster, postgres_private  # noqa: F401
from tests.fixtures.serveproc import (
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
OUTAGES = 2
DOWN_FOR = 3.0


@pytest.fixture
def dkim(dns_server: DnsServer) -> DkimKey:
    key = generate_key()
    dns_server.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [key.txt_record]
    return key


@pytest.fixture
def node(
    tmp_path: Path,
    dns_server: DnsServer,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    postgres_private: PostgresCluster,  # noqa: F811
) -> Iterator[ServeNode]:
    env = {
        **base_env(dns_server, smtp_sink),
        "GATEWAY__DATABASE__URL": postgres_private.create_database(),
    }
    home = GatewayHome.create(tmp_path / "home", env)
    home.set_up_court(court_key.armored_public, MEASURES)
    serve = home.node()
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


def crash_database(
    cluster: PostgresCluster, letters: list[Letter], outages: list[list[str]], done: threading.Event
) -> None:
    """Halt the cluster each time another share of the letters is answered; note what came back."""
    for outage in range(OUTAGES):
        target = len(letters) * (outage + 1) // (OUTAGES + 2)
        while sum(letter.reference is not None for letter in letters) < target:
            if done.wait(0.05):
                return
        seen = sum(len(letter.replies) for letter in letters)
        cluster.halt("immediate")
        time.sleep(DOWN_FOR)
        outages.append([r for letter in letters for r in letter.replies][seen:])
        cluster.start()


def test_postgres_crash_mid_load_gets_451_then_every_resent_letter_stored_once(
    node: ServeNode,
    dkim: DkimKey,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    postgres_private: PostgresCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    codes = request_codes(node.smtp_port, dkim, smtp_sink, MEASURES)
    receipts_before = len(smtp_sink.messages)
    letters = compose_letters(dkim, codes, LETTERS)
    outages: list[list[str]] = []
    done = threading.Event()
    crasher = threading.Thread(
        target=crash_database, args=(postgres_private, letters, outages, done), name="crasher"
    )
    crasher.start()
    try:
        report = drive([node.smtp_port], letters, clients=8)
    finally:
        done.set()
        crasher.join()
    print(f"{report.seconds:.1f}s, replies {dict(report.replies)}")
    assert len(outages) == OUTAGES
    for replies in outages:
        # While the database is down every DATA gets a temporary 451 4.3.0, nothing else.
        codes_seen = {" ".join(reply.split()[:2]) for reply in replies}
        assert "451 4.3.0" in codes_seen, replies[:5]
        assert all(not reply.startswith("5") for reply in replies), replies[:5]
    assert node.alive, node.log_tail()
    assert "Traceback" not in node.log(), node.log_tail()  # an outage is no internal error
    # Each 451 is the operator's to see in the log: a warning naming the fault.
    warnings = [line for line in node.log().splitlines() if "smtp temporary failure" in line]
    assert warnings, node.log_tail()
    faults = ('reason="StorageUnavailable"', 'reason="CommitUncertain"')
    assert all(any(fault in line for fault in faults) for line in warnings), warnings[:3]

    services = node.home.services()
    try:
        verify_stored_once(services.db, letters)
        verify_audit_chain(services.db)
        verify_check(services.db, services.blobs, services.clock())
        verify_decrypts(services.db, services.blobs, court_key.gnupghome, letters, tmp_path / "x")
    finally:
        services.close()
    # The outbox came back with the database: every receipt reaches the relay.
    smtp_sink.wait_for(receipts_before + LETTERS, timeout=60)
