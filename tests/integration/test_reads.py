"""The accept path's reads: what `Database.read_connection()` reads is what Core reads.

On SQLite the reads run on the driver's connection (`SqliteReads`): the
same SQL, bound and read back through the column types' own processors, so
timestamps come back timezone-aware and compare as Core compares them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, select

from gateway.errors import StorageUnavailable
from gateway.storage.courts import active_fingerprints, active_keys, court_by_code
from gateway.storage.credentials import credential_state
from gateway.storage.db import Database, Reads, SqliteReads
from gateway.storage.models import Court, Throttle, table_of
from gateway.storage.registrations import active_for_measure, sender_registered
from gateway.storage.requests import code_by_hmac
from gateway.storage.submissions import duplicate_of
from gateway.storage.throttles import any_locked
from tests.fixtures.storedrows import NOW, PARIS_JUST_BEFORE, SENDER, fill

READS: list[tuple[str, Callable[[Reads], Any]]] = [
    ("registered", lambda r: sender_registered(r, SENDER)),
    ("not registered", lambda r: sender_registered(r, "autre@exemple.fr")),
    ("measure", lambda r: active_for_measure(r, SENDER, 1, "21/00123")),
    ("revoked measure", lambda r: active_for_measure(r, SENDER, 1, "22/00001")),
    ("code", lambda r: code_by_hmac(r, "h" * 64, SENDER)),
    ("code, another sender", lambda r: code_by_hmac(r, "h" * 64, "autre@exemple.fr")),
    ("no code", lambda r: code_by_hmac(r, "x" * 64, SENDER)),
    ("locked before", lambda r: any_locked(r, ["free", "locked"], NOW - timedelta(microseconds=1))),
    ("locked at", lambda r: any_locked(r, ["free", "locked"], NOW)),
    # The same instant an hour ahead: compared in UTC, as stored, not as written.
    ("locked before, Paris", lambda r: any_locked(r, ["locked"], PARIS_JUST_BEFORE)),
    ("not locked", lambda r: any_locked(r, ["free", "absent"], NOW - timedelta(days=1))),
    ("duplicate", lambda r: duplicate_of(r, "m" * 64, "r" * 64)),
    ("no duplicate", lambda r: duplicate_of(r, "m" * 64, "s" * 64)),
    ("fingerprints", lambda r: active_fingerprints(r, 1)),
    ("keys", lambda r: active_keys(r, 1)),
    ("court", lambda r: court_by_code(r, "TJ-LYON")),
    ("no court", lambda r: court_by_code(r, "TJ-NULLE")),
    ("credential", lambda r: credential_state(r, 1)),
]


def test_read_connection_reads_what_core_reads(db: Database) -> None:
    fill(db)
    with db.engine.connect() as connection:
        core = {name: read(Reads(connection)) for name, read in READS}
    for _ in range(2):  # compiled on the first pass, from the cache on the second
        with db.read_connection() as reads:
            assert isinstance(reads, SqliteReads) == db.is_sqlite
            fast = {name: read(reads) for name, read in READS}
        assert fast == core
    assert core["locked before"] and core["locked before, Paris"]
    assert not core["locked at"] and not core["not locked"]
    assert core["code"].expires_at == NOW + timedelta(hours=48)
    assert core["code"].expires_at.tzinfo is not None and core["code"].closed_at is None
    assert core["registered"] is True and core["not registered"] is False
    assert core["measure"].address == "Tuteur@Exemple.fr" and core["revoked measure"] is None
    assert core["code"].registration == core["measure"]
    assert core["code, another sender"].registration is None
    assert core["code, another sender"].request_reference == "R-1"
    assert core["fingerprints"] == (f"F{0:039d}", f"F{2:039d}")
    assert core["duplicate"] == "R-1-1" and core["no duplicate"] is None


def test_sqlite_read_failure_is_storage_unavailable_and_the_connection_stays_usable(
    db: Database,
) -> None:
    if not db.is_sqlite:
        pytest.skip("SqliteReads only")
    absent = Table("absent", MetaData(), Column("id", Integer))
    with pytest.raises(StorageUnavailable), db.read_connection() as reads:
        reads.rows(select(absent.c.id), {})
    with db.read_connection() as reads:  # its transaction was ended, its connection pooled
        assert reads.first(select(bindparam("one", 1)), {}) == (1,)
    with db.transaction() as session:  # and nothing holds a lock a writer waits for
        session.add(Throttle(key="after", window_started_at=NOW))


def test_sqlite_reads_refuse_a_statement_rendered_at_every_run(db: Database) -> None:
    if not db.is_sqlite:
        pytest.skip("SqliteReads only")
    courts = table_of(Court)
    expanding = select(courts.c.id).where(courts.c.code.in_(bindparam("codes", expanding=True)))
    with pytest.raises(TypeError), db.read_connection() as reads:
        reads.rows(expanding, {"codes": ["TJ-LYON"]})
