"""DNS that never answers, and a relay that refuses connections, under a real gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.storage.models import Outbox, Submission
from tests.fixtures.dkimkeys import sign
from tests.fixtures.gatewayserver import SENDER_DOMAIN, World
from tests.fixtures.gpgkeys import kill_agent
from tests.fixtures.pdfs import plain_pdf

FILINGS = 5


@pytest.fixture(autouse=True)
def _stop_gateway_gpg_agent(gateway_config: Path) -> Iterator[None]:
    yield
    kill_agent(gateway_config.parent / "var" / "gnupg")


def filing(world: World, code: str, index: int = 0) -> bytes:
    return world.gw.message(
        subject=f"Compte de gestion [{code}]",
        body=f"envoi {index}\n",
        attachments=[("compte.pdf", "application/pdf", plain_pdf())],
    )


def test_dns_that_never_answers_gets_451_4_4_3_then_the_retry_is_accepted(world: World) -> None:
    code = world.request_code()
    # Signed under a selector not looked up yet: the resolver's cache cannot answer for it.
    unsigned = world.gw.message(
        subject=f"Compte de gestion [{code}]",
        attachments=[("compte.pdf", "application/pdf", plain_pdf())],
        sign_domain=None,
    )
    world.gw.dns.records[f"s2._domainkey.{SENDER_DOMAIN}"] = [world.gw.dkim.txt_record]
    raw = sign(unsigned, b"s2", SENDER_DOMAIN.encode(), world.gw.dkim.private_pem)
    world.gw.dns.blackhole = True  # reads every query, answers none
    try:
        started = time.monotonic()
        status, reply = world.gw.send(raw)
        assert (status, reply[:5]) == (451, "4.4.3"), reply
        assert time.monotonic() - started < 10  # dns.timeout is 1 s here
    finally:
        world.gw.dns.blackhole = False
    with world.gw.services.db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 0
    status, reply = world.gw.send(raw)
    assert status == 250, reply


def receipt_rows(world: World) -> list[Outbox]:
    with world.gw.services.db.reading() as session:
        rows = list(session.scalars(select(Outbox).where(Outbox.kind == "receipt")))
        session.expunge_all()
    return rows


def wait_attempts(world: World, attempts: int, timeout: float = 30.0) -> list[Outbox]:
    """Wake the outbox until every receipt has `attempts` recorded attempts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = receipt_rows(world)
        if len(rows) == FILINGS and all(row.attempts >= attempts for row in rows):
            return rows
        world.gw.services.outbox.wake()
        time.sleep(0.2)
    raise AssertionError([(row.id, row.attempts, row.status) for row in receipt_rows(world)])


def test_relay_refusing_connections_outbox_backs_off_then_delivers_everything_once(
    world: World,
) -> None:
    code = world.request_code()
    world.sink.stop()  # connection refused from now on
    for index in range(FILINGS):
        status, reply = world.gw.send(filing(world, code, index))
        assert status == 250, reply
    delays = []
    for attempt in (1, 2, 3):
        rows = wait_attempts(world, attempt)
        assert {row.status for row in rows} == {"pending"}
        now = world.gw.clock()
        delays.append(min(row.next_attempt_at for row in rows) - now)
        latest = max(row.next_attempt_at for row in rows)
        world.gw.clock.advance(latest - now + timedelta(seconds=1))
    # The back-off grows: about 30 s, 1 min, 2 min after the first, second and third failure.
    assert [round(d.total_seconds() / 30) for d in delays] == [1, 2, 4], delays
    before = len(world.sink.messages)
    world.sink.start()  # the relay is back on the same port
    world.gw.services.outbox.wake()
    world.sink.wait_for(before + FILINGS, timeout=30)
    time.sleep(1.0)  # nothing more comes: each receipt was delivered once
    received = world.sink.messages[before:]
    assert len(received) == FILINGS
    assert {row.status for row in receipt_rows(world)} == {"sent"}
    references = sorted(
        row.related_reference or "" for row in receipt_rows(world)
    )
    for reference in references:
        assert sum(reference.encode() in data for _s, _r, data in received) >= 1, reference
    # The gateway says EHLO to the relay as itself (smtp.hostname, else gateway.domain).
    assert set(world.sink.ehlo_names[before:]) == {world.gw.services.settings.host_name}
