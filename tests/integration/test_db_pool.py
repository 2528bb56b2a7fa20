"""The connection pool holds one connection per thread of the accept path, on SQLite and PostgreSQL.

SQLAlchemy's QueuePool closes every connection returned beyond its size:
with the 5 (SQLite) or 10 (PostgreSQL) it had before `database.pool_size`
was honoured, 20 sessions cost a fresh SQLite connection every other
message and a new PostgreSQL backend every few.  Here 20 threads hold a
read transaction at once, again and again, and only the first round may
connect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from gateway.app import Services
from gateway.settings import DatabaseSection, load_settings
from gateway.storage import migrate
from gateway.storage.db import POOL_SIZE, Database
from gateway.storage.models import Registration
from tests.conftest import PostgresCluster

THREADS = 20


def _connections_per_round(db: Database, rounds: int, threads: int = THREADS) -> list[int]:
    """How many connections the engine opened in each round of `threads` concurrent reads."""
    opened = [0]
    lock = threading.Lock()

    def count(*_: object) -> None:
        with lock:
            opened[0] += 1

    event.listen(db.engine, "connect", count)
    barrier = threading.Barrier(threads, timeout=20)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            with db.read_connection() as reads:
                reads.first(Registration.__table__.select().limit(1), {})
                barrier.wait()  # every thread holds its connection at once
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    per_round = []
    for _ in range(rounds):
        before = opened[0]
        started = [threading.Thread(target=read) for _ in range(threads)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
        assert not failures, failures
        per_round.append(opened[0] - before)
    return per_round


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database.from_url(f"sqlite:///{tmp_path / 'gateway.db'}")
    migrate.upgrade(db)
    yield db
    db.dispose()


def test_sqlite_concurrent_reads_reuse_their_connections(sqlite_db: Database) -> None:
    first, *later = _connections_per_round(sqlite_db, rounds=4)
    assert first <= THREADS
    assert later == [0, 0, 0]


def test_postgresql_concurrent_reads_reuse_their_connections(
    postgres_cluster: PostgresCluster,
) -> None:
    db = Database.from_url(postgres_cluster.create_database())
    try:
        migrate.upgrade(db)
        first, *later = _connections_per_round(db, rounds=4)
    finally:
        db.dispose()
    assert first <= THREADS
    assert later == [0, 0, 0]


def test_a_smaller_pool_closes_what_it_cannot_keep(tmp_path: Path) -> None:
    """The setting is the pool: with room for 4, every round opens the 8 others again."""
    db = Database.from_url(f"sqlite:///{tmp_path / 'gateway.db'}", pool_size=4)
    try:
        migrate.upgrade(db)
        # 4 kept + 8 overflow = 12 at once: 20 threads at a barrier would wait for a 13th.
        _first, *later = _connections_per_round(db, rounds=3, threads=12)
    finally:
        db.dispose()
    assert later == [8, 8]


def test_database_pool_size_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "gateway.db"}"\npool_size = 7\n',
        encoding="utf-8",
    )
    services = Services(load_settings(config, {}))
    try:
        assert services.db.engine.pool.size() == 7  # type: ignore[attr-defined]
    finally:
        services.db.dispose()
    assert DatabaseSection().pool_size == POOL_SIZE  # the settings' default is the engine's
