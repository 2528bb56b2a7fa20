"""Two `serve` nodes on one PostgreSQL and one mailbox: kill the one pulling, the other takes over.

The mailbox's lease is short here (`lease = "6s"`) so the takeover happens
within the test; in production it defaults to three polls and at least five
minutes.  The message appended after the kill is pulled, stored once and
stripped by the surviving node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.imap.stub import STUB_HEADER
from gateway.storage.models import Lease, Submission
from tests.fixtures.dkimkeys import DkimKey, generate_key, sign
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.dovecot import PDF, Dovecot, carries_document
from tests.fixtures.gpgkeys import CourtKey
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serveproc import (
    DOMAIN,
    GUARDIAN,
    SELECTOR,
    SENDER_DOMAIN,
    GatewayHome,
    ServeNode,
    base_env,
    request_codes,
)
from tests.fixtures.smtpsink import SmtpSink

pytestmark = [pytest.mark.postgres, pytest.mark.dovecot]

MEASURE = "21/00123"
LEASE_NAME = "imap:intake"


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def dkim(dns_server: DnsServer) -> DkimKey:
    key = generate_key()
    dns_server.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [key.txt_record]
    return key


@pytest.fixture
def homes(
    tmp_path: Path,
    dns_server: DnsServer,
    smtp_sink: SmtpSink,
    court_key: CourtKey,
    postgres_cluster: PostgresCluster,
    dovecot: Dovecot,
) -> tuple[GatewayHome, GatewayHome]:
    mailboxes = (
        f'[{{name = "intake", host = "127.0.0.1", port = {dovecot.port}, tls = "none", '
        f'username = "{dovecot.user}", password = "{dovecot.password}", '
        'poll_interval = "2s", lease = "6s"}]'
    )
    env = {
        **base_env(dns_server, smtp_sink),
        "GATEWAY__DATABASE__URL": postgres_cluster.create_database(),
        "GATEWAY__IMAP__MAILBOXES": mailboxes,
    }
    first = GatewayHome.create(tmp_path / "a", env)
    first.set_up_court(court_key.armored_public, [MEASURE])
    return first, first.clone(tmp_path / "b")


@pytest.fixture
def nodes(homes: tuple[GatewayHome, GatewayHome]) -> Iterator[tuple[ServeNode, ServeNode]]:
    node_a, node_b = homes[0].node("a"), homes[1].node("b")
    try:
        yield node_a, node_b
    finally:
        node_a.stop()
        node_b.stop()


def holder(home: GatewayHome) -> str | None:
    services = home.services()
    try:
        with services.db.reading() as session:
            return session.scalar(select(Lease.holder).where(Lease.name == LEASE_NAME))
    finally:
        services.close()


def imap_submissions(home: GatewayHome) -> list[str]:
    services = home.services()
    try:
        with services.db.reading() as session:
            return list(session.scalars(select(Submission.channel)))
    finally:
        services.close()


def filing(dkim: DkimKey, code: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = GUARDIAN, f"depot+{code.replace('-', '')}@{DOMAIN}"
    msg["Subject"] = "Compte de gestion 2024"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=SENDER_DOMAIN)
    msg.set_content("Bonjour,\n")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte.pdf")
    raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    return sign(raw, SELECTOR.encode(), SENDER_DOMAIN.encode(), dkim.private_pem)


def test_imap_node_killed_the_other_takes_the_mailbox_once_its_lease_runs_out(
    homes: tuple[GatewayHome, GatewayHome],
    nodes: tuple[ServeNode, ServeNode],
    dkim: DkimKey,
    smtp_sink: SmtpSink,
    dovecot: Dovecot,
) -> None:
    home_a, _home_b = homes
    node_a, node_b = nodes
    node_a.start()
    _wait(lambda: holder(home_a) is not None, 30, "node A's first pass")
    first_holder = holder(home_a)
    node_b.start()
    time.sleep(3)  # B polls the lease and finds it held
    assert holder(home_a) == first_holder, "B took a mailbox A still holds"

    [code] = request_codes(node_a.smtp_port, dkim, smtp_sink, [MEASURE])
    node_a.kill()
    dovecot.append(filing(dkim, code))

    def stripped() -> bool:
        found = dovecot.messages()
        return len(found) == 1 and STUB_HEADER.encode() in found[0][2]

    _wait(stripped, 60, "node B to pull and strip the message")
    assert holder(home_a) not in (None, first_holder)
    [(_uid, _head, stub)] = dovecot.messages()
    assert not carries_document(stub)
    assert imap_submissions(home_a) == ["imap"]  # stored once, by B
