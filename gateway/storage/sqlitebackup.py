"""SQLite's part of `gateway backup`: an online snapshot through the backup API, and its blob rows.

The snapshot is taken with `sqlite3.Connection.backup` in a single step
(every page at once), which reads the database inside one read transaction:
the copy is the database as of one commit.  In WAL mode that read blocks no
writer, so `serve` keeps accepting meanwhile.  The copy is then switched to
the rollback journal, so it is one self-contained file (the gateway turns
WAL back on when it opens it).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.storage.db import Database

BUSY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class BlobRow:
    key: str
    sha256: str
    size: int


def database_file(db: Database) -> Path | None:
    """The SQLite file behind `db`; None for PostgreSQL or an in-memory database."""
    if not db.is_sqlite:
        return None
    name = db.engine.url.database
    if not name or name == ":memory:":
        return None
    return Path(name)


def snapshot(source: Path, target: Path) -> None:
    """Copy the live database at `source` to a new file `target`, consistently."""
    live = sqlite3.connect(str(source), timeout=BUSY_TIMEOUT_SECONDS)
    try:
        copy = sqlite3.connect(str(target))
        try:
            live.backup(copy)  # pages=-1: one step, one read transaction
            copy.execute("PRAGMA journal_mode=DELETE")
        finally:
            copy.close()
    finally:
        live.close()


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def blob_rows(snapshot_file: Path) -> list[BlobRow]:
    """The blobs a snapshot's rows use: every `blob` row a purge has not marked."""
    connection = _read_only(snapshot_file)
    try:
        rows = connection.execute(
            "SELECT key, sha256, size FROM blob WHERE purged_at IS NULL ORDER BY key"
        ).fetchall()
    finally:
        connection.close()
    return [BlobRow(str(key), str(sha256), int(size)) for key, sha256, size in rows]


def schema_revision(snapshot_file: Path) -> str:
    """The Alembic revision the snapshot's schema is at."""
    connection = _read_only(snapshot_file)
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    finally:
        connection.close()
    return str(row[0]) if row else ""
