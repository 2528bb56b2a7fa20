"""SIGKILL at random moments under load: nothing lost, nothing stored twice, everything readable.

A real `gateway serve` (SQLite, blob directory) takes a few hundred filings
from eight clients that re-send on any 4xx or cut connection; meanwhile it is
killed with SIGKILL five times, at moments drawn from a seeded random source
(printed; set GATEWAY_TEST_SEED to replay a failure), and started again on
the same data.
"""

from __future__ import annotations

import os
import random
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
from tests.fixtures.serveproc import (
    SELECTOR,
    SENDER_DOMAIN,
    GatewayHome,
    ServeNode,
    base_env,
    request_codes,
)
from tests.fixtures.smtpsink import SmtpSink

MEASURES = ["21/00123", "21/00124", "21/00125", "21/00126"]
LETTERS = 200
KILLS = 5


@pytest.fixture
def dkim(dns_server: DnsServer) -> DkimKey:
    key = generate_key()
    dns_server.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [key.txt_record]
    return key


@pytest.fixture
def node(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink, court_key: CourtKey
) -> Iterator[ServeNode]:
    home = GatewayHome.create(tmp_path / "home", base_env(dns_server, smtp_sink))
    home.set_up_court(court_key.armored_public, MEASURES)
    serve = home.node()
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


def kill_repeatedly(
    node: ServeNode, letters: list[Letter], rng: random.Random, done: threading.Event
) -> None:
    """SIGKILL the node KILLS times, starting it again each time.

    Each kill comes once a random number of letters has been answered, then
    after a random pause of up to half a second: anywhere in a transaction,
    and always while the load is still running.
    """
    marks = sorted(rng.sample(range(10, len(letters) - 10), KILLS))
    for mark in marks:
        while sum(letter.reference is not None for letter in letters) < mark:
            if done.wait(0.02):
                return
        time.sleep(rng.uniform(0.0, 0.5))
        node.kill()
        time.sleep(rng.uniform(0.0, 0.3))
        node.start()


def test_sigkill_under_load_every_letter_stored_once_and_readable(
    node: ServeNode,
    dkim: DkimKey,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("GATEWAY_TEST_SEED", random.randrange(1 << 30)))
    print(f"GATEWAY_TEST_SEED={seed}")
    codes = request_codes(node.smtp_port, dkim, smtp_sink, MEASURES)
    letters = compose_letters(dkim, codes, LETTERS)
    done = threading.Event()
    killer = threading.Thread(
        target=kill_repeatedly, args=(node, letters, random.Random(seed), done), name="killer"
    )
    killer.start()
    try:
        report = drive([node.smtp_port], letters, clients=8)
    finally:
        done.set()
        killer.join()
    print(f"{report.seconds:.1f}s, replies {dict(report.replies)}, kills {node.kills}")
    print(f"serve took {[round(s, 1) for s in node.start_seconds]}s to listen")
    assert node.kills == KILLS
    assert report.replies["lost"] > 0, "no kill cut a transaction"
    assert "Traceback" not in node.log(), node.log_tail()

    services = node.home.services()
    try:
        verify_stored_once(services.db, letters)
        verify_audit_chain(services.db)
        swept, _ = verify_check(services.db, services.blobs, services.clock())
        print(f"orphan blobs of interrupted writes swept: {len(swept.orphans)}")
        verify_decrypts(services.db, services.blobs, court_key.gnupghome, letters, tmp_path / "x")
    finally:
        services.close()
