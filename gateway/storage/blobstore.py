"""The blob store: the contract every backend keeps, and its directory backend.

`BlobStorage` is what callers use; `BlobStore` keeps encrypted blobs as files
under one directory, written durably and atomically (the S3 backend is in
``s3blobs``).  Every method does blocking I/O: async callers run them in a
worker thread (``asyncio.to_thread``).  A key never comes from outside
unchecked: each one is matched against a strict pattern (`check_key`) before
it reaches the disk or the network.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from gateway.errors import BlobStoreFull, NotFound, StorageUnavailable

KINDS = ("raw", "doc", "manifest")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KEY_RE = re.compile(rf"[0-9]{{4}}/[0-9]{{2}}/[0-9]{{2}}/{_UUID}\.(?:raw|doc|manifest)\.pgp")
_TEMP_RE = re.compile(r"\.[^/]+\.tmp")
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class BlobStorage(Protocol):
    """What the gateway needs of a blob store, whatever keeps the bytes.

    The promise callers rely on: once `write` (and, for a caller that asked
    for deferred syncing, `sync_files` and `sync_directory`) has returned,
    the blob survives a crash of this host, so a database row may refer to
    it.  Keys come from `new_key` and are checked again on every call.
    """

    def new_key(self, kind: str, now: datetime) -> str:
        """A fresh key for a blob of ``kind`` (raw, doc, manifest) received at ``now``."""
        ...

    def write(self, key: str, data: bytes, *, sync_dir: bool = True, sync: bool = True) -> str:
        """Store ``data`` under ``key``; return its SHA-256 (hex)."""
        ...

    def directory_of(self, key: str) -> Path:
        """What to hand `sync_directory` to make ``key``'s name durable (one call per batch)."""
        ...

    def sync_files(self, keys: Sequence[str]) -> None:
        """Make the contents of ``keys`` (written with ``sync=False``) durable."""
        ...

    def sync_directory(self, directory: Path) -> None:
        """Make the names written in ``directory`` (with ``sync_dir=False``) durable."""
        ...

    def read(self, key: str) -> bytes:
        """The blob's bytes; `NotFound` if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Remove a blob; return whether it existed (deleting twice is not an error)."""
        ...

    def iter_keys(self) -> Iterator[str]:
        """Every blob key in the store, in sorted order; other names are skipped."""
        ...

    def modified_at(self, key: str) -> datetime:
        """When the blob was last written (UTC-aware); `NotFound` if there is none."""
        ...

    def sweep_temp(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Remove leftovers of interrupted writes older than ``older_than``; return how many."""
        ...

    def free_bytes(self) -> int:
        """Room left for blobs, compared with ``limits.disk_reserve_bytes`` before a write."""
        ...


def check_key(key: str) -> str:
    """``key`` itself if it is a well-formed blob key; `ValueError` otherwise."""
    if not _KEY_RE.fullmatch(key):
        raise ValueError("invalid blob key")
    return key


def is_key(name: str) -> bool:
    """Whether ``name`` is named like a blob key (listings skip anything else)."""
    return _KEY_RE.fullmatch(name) is not None


def new_blob_key(kind: str, now: datetime, new_id: Callable[[], uuid.UUID]) -> str:
    """``YYYY/MM/DD/<uuid>.<kind>.pgp`` for a blob of ``kind`` received at ``now``."""
    if kind not in KINDS:
        raise ValueError(f"blob kind must be one of {', '.join(KINDS)}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    day = now.astimezone(UTC).strftime("%Y/%m/%d")
    return f"{day}/{new_id()}.{kind}.pgp"


class BlobStore:
    """Blobs named ``YYYY/MM/DD/<uuid>.<kind>.pgp`` under ``root``."""

    def __init__(self, root: Path, *, new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        self._root = root
        self._new_id = new_id
        self._made: set[str] = set()
        """Directories this store made or found, not looked at again (a message writes three
        blobs into one day's directory); one that went meanwhile is made again (`write`)."""

    @property
    def root(self) -> Path:
        return self._root

    def new_key(self, kind: str, now: datetime) -> str:
        """A fresh key for a blob of ``kind`` (raw, doc, manifest) received at ``now``."""
        return new_blob_key(kind, now, self._new_id)

    def write(self, key: str, data: bytes, *, sync_dir: bool = True, sync: bool = True) -> str:
        """Store ``data`` durably under ``key``; return its SHA-256 (hex).

        Temporary file in the same directory, fsync, rename over, fsync the
        directory: after a crash the key holds either nothing or all of it.
        With ``sync_dir=False`` the caller fsyncs the directory itself
        (`sync_directory(directory_of(key))`) before relying on the blob, so
        that a batch of writes to one directory shares that fsync. With
        ``sync=False`` the file is not fsync'd either: the caller calls
        `sync_files` before relying on it (a batch fsyncs its files in
        parallel); until then a crash may leave the key truncated, which is
        harmless while no row refers to it.
        """
        path = self._path(key)
        try:
            try:
                self._put(path, data, sync)
            except FileNotFoundError:  # its directory went (removed, or a mount over it)
                self._made.discard(str(path.parent))
                self._put(path, data, sync)
            if sync_dir:
                _fsync_dir(path.parent)
        except OSError as exc:
            raise _storage_error(exc) from None
        return hashlib.sha256(data).hexdigest()

    def _put(self, path: Path, data: bytes, sync: bool) -> None:
        self._make_parents(path.parent)
        temp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
        try:
            _write_file(temp, data, sync=sync)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def directory_of(self, key: str) -> Path:
        """The directory holding the blob ``key``."""
        return self._path(key).parent

    def sync_files(self, keys: Sequence[str]) -> None:
        """fsync the files of ``keys`` (written with ``sync=False``), several at once.

        Concurrent fsyncs share the file system's journal commits.
        """
        paths = [self._path(key) for key in keys]
        try:
            if len(paths) == 1:
                _fsync_file(paths[0])
            else:
                list(_SYNC_POOL.map(_fsync_file, paths))
        except OSError as exc:
            raise _storage_error(exc) from None

    def sync_directory(self, directory: Path) -> None:
        """Make the entries created in ``directory`` durable (see `write`)."""
        try:
            _fsync_dir(directory)
        except OSError as exc:
            raise _storage_error(exc) from None

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None
        except OSError:
            raise StorageUnavailable("blob store unavailable") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> bool:
        """Remove a blob; return whether it existed (deleting twice is not an error)."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError:
            raise StorageUnavailable("blob store unavailable") from None
        _fsync_dir(path.parent)
        return True

    def iter_keys(self) -> Iterator[str]:
        """Every blob key in the store, in sorted order; temporary and foreign files are skipped."""
        if not self._root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self._root):
            dirnames.sort()
            relative = Path(dirpath).relative_to(self._root)
            for name in sorted(filenames):
                key = (relative / name).as_posix()
                if is_key(key):
                    yield key

    def modified_at(self, key: str) -> datetime:
        """The file's modification time."""
        try:
            mtime = self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"blob {key} not found") from None
        except OSError:
            raise StorageUnavailable("blob store unavailable") from None
        return datetime.fromtimestamp(mtime, tz=UTC)

    def sweep_temp(self, older_than: timedelta, *, now: datetime | None = None) -> int:
        """Remove temporary files left by interrupted writes; return how many were removed.

        Only files older than ``older_than`` go, so a write in progress is safe.
        """
        cutoff = (now or datetime.now(UTC)).timestamp() - older_than.total_seconds()
        removed = 0
        if not self._root.is_dir():
            return removed
        for dirpath, _dirnames, filenames in os.walk(self._root):
            for name in filenames:
                if not _TEMP_RE.fullmatch(name):
                    continue
                temp = Path(dirpath) / name
                try:
                    if temp.stat().st_mtime < cutoff:
                        temp.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # finished or swept concurrently
        return removed

    def free_bytes(self) -> int:
        """Free space on the store's file system (the root, or its nearest existing parent)."""
        probe = self._root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        return shutil.disk_usage(probe).free

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*check_key(key).split("/"))

    def _make_parents(self, directory: Path) -> None:
        """Create missing directories, fsyncing each parent so the new entry is durable."""
        made = str(directory)
        if made in self._made:
            return
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        current = self._root
        for part in directory.relative_to(self._root).parts:
            current = current / part
            if current.is_dir():
                continue
            try:
                current.mkdir(mode=0o700)
            except FileExistsError:
                continue  # another writer made it, and fsynced its parent
            _fsync_dir(current.parent)
        self._made.add(made)


def _write_file(path: Path, data: bytes, *, sync: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    handle = os.open(path, flags, 0o600)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        if sync:
            os.fsync(out.fileno())


def _fsync_path(path: Path, flags: int = 0) -> None:
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | flags)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    _fsync_path(path)


def _fsync_dir(directory: Path) -> None:
    _fsync_path(directory, getattr(os, "O_DIRECTORY", 0))


_SYNC_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-sync")


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in _FULL_ERRNOS:
        return BlobStoreFull("blob store is full")
    return StorageUnavailable("blob store unavailable")
