"""Every SQLite connection the engine opens carries the durability, temp-file and read settings."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from gateway.storage.db import make_engine


def test_connections_are_wal_full_sync_with_foreign_keys_temp_files_in_memory_and_mmap(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "temp_store")
            }
            mmap = connection.execute(text("PRAGMA mmap_size")).scalar()
    finally:
        engine.dispose()
    # synchronous 2 = FULL: a commit is fsync'd before `250`; temp_store 2 = MEMORY.
    assert pragma == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "temp_store": 2}
    # Pages read through a memory map (SQLite lowers the size asked to its own bound).
    assert mmap is not None and mmap >= 1 << 30
