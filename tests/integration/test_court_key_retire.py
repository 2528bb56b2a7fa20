"""Retiring a court key through a running gateway: new filings stop being encrypted to it.

What was stored before stays encrypted to the retired key (the greffe keeps its
private half); what comes after is encrypted to the remaining keys only, checked
by decrypting with each key's own GnuPG home. Retiring the last key, when forced,
makes the court's filings 451 until a key is added.
"""

from __future__ import annotations

import subprocess
import threading

import pytest
from sqlalchemy import select

from gateway.errors import Conflict
from gateway.storage.courts import CourtRepository
from gateway.storage.models import Submission
from tests.fixtures.gatewayserver import COURT, World
from tests.fixtures.gpgkeys import CourtKey

pytestmark = pytest.mark.gpg


def decrypts_with(key: CourtKey, data: bytes) -> bool:
    """Whether gpg, holding only `key`'s secret half, decrypts `data`."""
    done = subprocess.run(
        ["gpg", "--homedir", str(key.gnupghome), "--batch", "--quiet", "--decrypt"],
        input=data,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode == 0


def stored_raw(world: World) -> list[bytes]:
    """The encrypted raw message of each submission, oldest first."""
    services = world.gw.services
    with services.db.reading() as session:
        keys = list(session.scalars(select(Submission.raw_blob).order_by(Submission.id)))
    return [services.blobs.read(key) for key in keys]


def test_retired_key_gets_no_new_filing_and_the_last_one_only_when_forced(
    world: World, court_key: CourtKey, second_court_key: CourtKey
) -> None:
    admin = world.gw.services.admin
    admin.add_court_key(COURT, second_court_key.armored_public.encode(), "test")
    code = world.request_code()
    status, reply = world.gw.send(world.filing(code, "avant le retrait\n"))
    assert status == 250, reply

    retired = admin.retire_court_key(COURT, court_key.fingerprint.lower(), "test")
    assert (retired.fingerprint, retired.active_keys_left) == (court_key.fingerprint, 1)
    status, reply = world.gw.send(world.filing(code, "après le retrait\n"))
    assert status == 250, reply

    before, after = stored_raw(world)
    assert decrypts_with(court_key, before) and decrypts_with(second_court_key, before)
    assert not decrypts_with(court_key, after)
    assert decrypts_with(second_court_key, after)

    # The only active key left is kept unless forced; forced, the court refuses filings.
    with pytest.raises(Conflict, match="only active key"):
        admin.retire_court_key(COURT, second_court_key.fingerprint, "test")
    status, reply = world.gw.send(world.filing(code, "toujours reçu\n"))
    assert status == 250, reply
    admin.retire_court_key(COURT, second_court_key.fingerprint, "test", last=True)
    status, reply = world.gw.send(world.filing(code, "plus de clé\n"))
    assert (status, reply[:5]) == (451, "4.3.0"), reply
    assert len(stored_raw(world)) == 3

    # A retired key is not taken back: the greffe makes a new one.
    with pytest.raises(Conflict, match="was retired"):
        admin.add_court_key(COURT, court_key.armored_public.encode(), "test")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_retirements_at_once_leave_the_court_a_key(
    world: World, court_key: CourtKey, second_court_key: CourtKey
) -> None:
    """Each would see the other's key still active at READ COMMITTED: the court row is locked."""
    services = world.gw.services
    services.admin.add_court_key(COURT, second_court_key.armored_public.encode(), "test")
    outcome: list[BaseException | None] = []

    def retire_second() -> None:
        try:
            services.admin.retire_court_key(COURT, second_court_key.fingerprint, "other")
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    with services.db.transaction() as session:
        courts = CourtRepository(session)
        court = courts.by_code(COURT, for_update=True)
        assert court is not None
        other = threading.Thread(target=retire_second)
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive(), "the second retirement did not wait for the court's lock"
        (first,) = [k for k in courts.keys(court.id) if k.fingerprint == court_key.fingerprint]
        first.status = "retired"
    other.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict), outcome
    assert "only active key" in str(outcome[0])
    (listed,) = [c for c in services.admin.list_courts() if c["code"] == COURT]
    assert [k["status"] for k in listed["keys"]] == ["retired", "active"]
