"""A court key that expires while the gateway runs: 451 4.3.0; `gateway check` names the court."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.audit.check import run_check
from gateway.storage.models import Blob, Submission
from tests.fixtures.gatewayserver import COURT, GatewayFactory, World, make_world
from tests.fixtures.gpgkeys import CourtKey, generate_expiring_keypair, kill_agent, make_gnupghome
from tests.fixtures.smtpsink import SmtpSink


@pytest.fixture
def expiring_key(tmp_path: Path) -> Iterator[CourtKey]:
    """A court key whose primary and encryption subkey expire a day from now."""
    home = make_gnupghome(tmp_path)
    try:
        fingerprint, armored = generate_expiring_keypair(home, days=1)
        yield CourtKey(home, fingerprint, armored)
    finally:
        kill_agent(home)


@pytest.fixture
def world_expiring(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    expiring_key: CourtKey,
    gateway_config: Path,
) -> Iterator[World]:
    yield make_world(smtp_sink, gateway_factory, expiring_key)
    kill_agent(gateway_config.parent / "var" / "gnupg")


def test_expired_court_key_gets_451_and_the_check_names_the_court(world_expiring: World) -> None:
    """pysequoia encrypts to an expired key all the same: the gateway used to answer 250."""
    world = world_expiring
    code = world.request_code()
    status, reply = world.gw.send(world.filing(code, "avant\n"))
    assert status == 250, reply
    services = world.gw.services
    assert run_check(services.db, services.blobs, world.gw.clock()).ok

    world.gw.clock.advance(timedelta(hours=25))  # the key has expired; the code (48 h) has not

    status, reply = world.gw.send(world.filing(code, "après\n"))
    assert (status, reply[:5]) == (451, "4.3.0"), reply
    assert "expired" in reply
    with services.db.reading() as session:
        assert session.scalar(select(func.count()).select_from(Submission)) == 1
        assert session.scalar(select(func.count()).select_from(Blob)) == 3
    findings = run_check(services.db, services.blobs, world.gw.clock())
    assert len(findings.problems) == 1, findings.problems
    assert findings.problems[0].startswith(
        f"court {COURT}: key {world.court_key.fingerprint} expired on "
    ), findings.problems


def test_expired_key_retired_after_its_successor_filings_resume(
    world_expiring: World, second_court_key: CourtKey
) -> None:
    """A successor alone leaves the expired key active (451); retiring the expired key lifts it."""
    world = world_expiring
    services = world.gw.services
    code = world.request_code()
    world.gw.clock.advance(timedelta(hours=25))
    services.admin.add_court_key(COURT, second_court_key.armored_public.encode(), "test")
    status, reply = world.gw.send(world.filing(code, "clé expirée et successeur\n"))
    assert (status, reply[:5]) == (451, "4.3.0"), reply
    problems = run_check(services.db, services.blobs, world.gw.clock()).problems
    assert len(problems) == 1, problems
    assert problems[0].endswith(
        f"until it is retired (add its successor, then `gateway courts retire-key {COURT} "
        f"{world.court_key.fingerprint}`)"
    ), problems

    services.admin.retire_court_key(COURT, world.court_key.fingerprint, "test")
    status, reply = world.gw.send(world.filing(code, "après le retrait\n"))
    assert status == 250, reply
    assert run_check(services.db, services.blobs, world.gw.clock()).ok
