"""`gateway backup` and `gateway restore`: a consistent online copy of the embedded (SQLite) data.

A backup folder holds::

    gateway.db              the database, from SQLite's online backup API
    blobs/YYYY/MM/DD/…      every blob the snapshot's `blob` rows name, verified
    keys/…                  the data directory's keys: server secret, signing and DKIM keys
    manifest.json           written last: every file's path, size and SHA-256

The order is what makes it consistent while `serve` keeps accepting.  The
snapshot comes first: a row is committed only after its blob is durable, so
every blob the snapshot names exists already, and blobs written later are
simply not in it.  Each blob is read through the blob store (directory or
S3) and its SHA-256 checked against the snapshot's row.  A blob that has
vanished because a retention purge removed it after the snapshot (its live
row is gone or marked) makes the backup take a new snapshot, keeping the
blobs already copied.  The manifest comes last, written to a temporary name,
fsync'd and renamed: a folder without one is a backup that did not finish.

The keys are secrets (the server secret keys every code hash; the signing
key signs receipts): a backup folder must be protected like the data
directory itself.

`restore` refuses a folder without a complete manifest, checks every file
against it before writing anything, refuses a target that is not empty,
and lays the files out as a data directory (`gateway.db` beside `blobs/`
and `keys/`, as the default configuration expects).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gateway.errors import ConfigError, GatewayError, InputError, NotFound
from gateway.ingest.manifest import rfc3339
from gateway.model import Clock
from gateway.storage.blobstore import BlobStorage, is_key
from gateway.storage.db import Database
from gateway.storage.sqlitebackup import (
    BlobRow,
    blob_rows,
    database_file,
    schema_revision,
    snapshot,
)
from gateway.storage.submissions import BlobRepository

FORMAT = "gateway.backup/1"
MANIFEST = "manifest.json"
DATABASE = "gateway.db"
SNAPSHOT_TRIES = 3
CHUNK = 1024 * 1024
_KEY_FILE = re.compile(r"[A-Za-z0-9_.-]+")
Progress = Callable[[int], None]
POSTGRES_HINT = (
    "gateway backup supports the embedded SQLite database only; for PostgreSQL pair "
    "pg_dump with a copy of the blobs (README, Operations: Backups on PostgreSQL)"
)


class BackupInvalid(GatewayError):
    """A backup folder that is incomplete or does not match its manifest; nothing was written."""


class BackupFailed(GatewayError):
    """The live data could not be copied consistently (a blob missing or damaged)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of a backup, as its manifest records it."""

    path: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Summary:
    blobs: int
    files: int
    bytes: int


class Backup:
    """Copies the live database, its blobs and the keys into a new folder."""

    def __init__(self, db: Database, blobs: BlobStorage, keys_dir: Path, clock: Clock) -> None:
        self.db = db
        self.blobs = blobs
        self.keys_dir = keys_dir
        self.clock = clock

    def write(self, out: Path, progress: Progress | None = None) -> Summary:
        source = database_file(self.db)
        if source is None:
            raise ConfigError(POSTGRES_HINT)
        _require_empty(out)
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        copied: dict[str, Entry] = {}
        rows = self._snapshot_with_blobs(source, out, copied, progress)
        wanted = {f"blobs/{row.key}" for row in rows}
        for path in [path for path in copied if path not in wanted]:  # purged meanwhile
            (out / path).unlink()
            del copied[path]
        entries = [_entry(out, DATABASE), *copied.values(), *self._copy_keys(out)]
        _sync_tree(out)
        manifest = {
            "format": FORMAT,
            "created_at": rfc3339(self.clock()),
            "schema_revision": schema_revision(out / DATABASE),
            "database": DATABASE,
            "blobs": len(rows),
            "files": [entry.as_dict() for entry in sorted(entries, key=lambda e: e.path)],
            "complete": True,
        }
        _write_durably(out / MANIFEST, json.dumps(manifest, indent=1).encode() + b"\n")
        return Summary(len(rows), len(entries), sum(entry.size for entry in entries))

    def _snapshot_with_blobs(
        self, source: Path, out: Path, copied: dict[str, Entry], progress: Progress | None
    ) -> list[BlobRow]:
        """The snapshot and every blob it names; a new snapshot if a purge got in between."""
        for _ in range(SNAPSHOT_TRIES):
            (out / DATABASE).unlink(missing_ok=True)
            snapshot(source, out / DATABASE)
            rows = blob_rows(out / DATABASE)
            if self._copy_blobs(out, rows, copied, progress):
                return rows
        raise BackupFailed("blobs kept being purged during the backup; run it again")

    def _copy_blobs(
        self, out: Path, rows: list[BlobRow], copied: dict[str, Entry], progress: Progress | None
    ) -> bool:
        """Copy the blobs not copied yet; False when one was purged after the snapshot."""
        for row in rows:
            path = f"blobs/{row.key}"
            if path in copied:
                continue
            try:
                data = self.blobs.read(row.key)
            except NotFound:
                if self._purged_since(row.key):
                    return False
                raise BackupFailed(f"blob {row.key} is missing (run gateway check)") from None
            digest = hashlib.sha256(data).hexdigest()
            if digest != row.sha256:
                raise BackupFailed(f"blob {row.key} does not match its recorded SHA-256")
            _write_durably(out / path, data, sync_dir=False)
            copied[path] = Entry(path, len(data), digest)
            if progress:
                progress(1)
        return True

    def _purged_since(self, key: str) -> bool:
        with self.db.reading() as session:
            row = BlobRepository(session).get(key)
        return row is None or row.purged_at is not None

    def _copy_keys(self, out: Path) -> list[Entry]:
        entries = []
        for path in sorted(self.keys_dir.rglob("*")):
            if not path.is_file():
                continue
            relative = f"keys/{path.relative_to(self.keys_dir).as_posix()}"
            _write_durably(out / relative, path.read_bytes(), sync_dir=False)
            entries.append(_entry(out, relative))
        return entries


def restore(source: Path, target: Path, progress: Progress | None = None) -> Summary:
    """Check a backup folder against its manifest, then lay it out as a data directory."""
    entries = read_manifest(source)
    for entry in entries:
        _verify(source, entry)
        if progress:
            progress(1)
    _require_empty(target)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in entries:
        data = (source / entry.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:  # changed since it was checked
            raise BackupInvalid(f"{entry.path} changed while it was being restored")
        _write_durably(target / entry.path, data, sync_dir=False)
    _sync_tree(target)
    blobs = sum(1 for entry in entries if entry.path.startswith("blobs/"))
    return Summary(blobs, len(entries), sum(entry.size for entry in entries))


def read_manifest(source: Path) -> list[Entry]:
    """The files a complete backup folder holds, each path checked; BackupInvalid otherwise."""
    try:
        manifest = json.loads((source / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise BackupInvalid(
            f"{source} has no {MANIFEST}: not a backup, or one that did not finish"
        ) from None
    except (OSError, ValueError):
        raise BackupInvalid(f"{source / MANIFEST} is unreadable") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid(f"{source / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("complete") is not True or not isinstance(manifest.get("files"), list):
        raise BackupInvalid(f"{source / MANIFEST} is incomplete")
    entries = [_manifest_entry(item) for item in manifest["files"]]
    if DATABASE not in {entry.path for entry in entries}:
        raise BackupInvalid(f"{source / MANIFEST} lists no {DATABASE}")
    return entries


def _manifest_entry(item: object) -> Entry:
    if not isinstance(item, dict):
        raise BackupInvalid("manifest entry is not an object")
    path, size, sha256 = item.get("path"), item.get("size"), item.get("sha256")
    if not (isinstance(path, str) and _safe_path(path)):
        raise BackupInvalid(f"manifest names an unexpected file: {str(path)[:80]!r}")
    if not isinstance(size, int) or not isinstance(sha256, str):
        raise BackupInvalid(f"manifest entry {path} has no size or SHA-256")
    return Entry(path, size, sha256)


def _safe_path(path: str) -> bool:
    """Only the three kinds of file a backup holds; nothing that could leave the target."""
    if path == DATABASE:
        return True
    parts = PurePosixPath(path).parts
    if parts[:1] == ("blobs",):
        return is_key("/".join(parts[1:])) and "/".join(parts) == path
    if parts[:1] == ("keys",) and len(parts) > 1:
        return all(_KEY_FILE.fullmatch(p) and p not in (".", "..") for p in parts[1:])
    return False


def _verify(source: Path, entry: Entry) -> None:
    path = source / entry.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupInvalid(f"{entry.path} is missing from the backup") from None
    if size != entry.size or _sha256_file(path) != entry.sha256:
        raise BackupInvalid(f"{entry.path} does not match the manifest's SHA-256")


def _require_empty(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder} must be an empty or new folder")


def _entry(root: Path, relative: str) -> Entry:
    path = root / relative
    return Entry(relative, path.stat().st_size, _sha256_file(path))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_durably(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """A temporary file beside `path`, fsync'd, renamed over it (0600; folders 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    if sync_dir:
        _fsync_dir(path.parent)


def _sync_tree(root: Path) -> None:
    """fsync every file's folder (and the files SQLite wrote) before the manifest names them."""
    database = root / DATABASE
    if database.exists():
        _fsync_path(database, os.O_RDONLY)
    for folder in _folders(root):
        _fsync_dir(folder)


def _folders(root: Path) -> Iterable[Path]:
    yield from sorted((path for path in root.rglob("*") if path.is_dir()), reverse=True)
    yield root


def _fsync_dir(folder: Path) -> None:
    _fsync_path(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path: Path, flags: int) -> None:
    handle = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
