"""BlobStore writes: durable, atomic, content and hash read back, nothing temporary left."""

from __future__ import annotations

import hashlib
import shutil
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import NotFound
from gateway.storage.blobstore import BlobStore

NOW = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_write_reads_back_and_returns_sha256(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("raw", NOW)
    data = b"\x00encrypted\xff" * 1000

    digest = store.write(key, data)

    assert digest == hashlib.sha256(data).hexdigest()
    assert store.read(key) == data
    assert store.exists(key)


def test_write_leaves_only_the_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("doc", NOW)

    store.write(key, b"x")

    assert _all_files(tmp_path / "blobs") == [key]


def test_write_creates_private_files_and_directories(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("manifest", NOW)

    store.write(key, b"x")

    path = tmp_path / "blobs" / key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_write_empty_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("raw", NOW)

    assert store.write(key, b"") == hashlib.sha256(b"").hexdigest()
    assert store.read(key) == b""


def test_write_replaces_whole_content(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("raw", NOW)
    store.write(key, b"a much longer first version")

    store.write(key, b"short")

    assert store.read(key) == b"short"


def test_new_key_uses_utc_day_and_the_id_seam(tmp_path: Path) -> None:
    fixed = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    store = BlobStore(tmp_path, new_id=lambda: fixed)
    paris_evening = datetime.fromisoformat("2026-11-26T00:30:00+01:00")

    assert store.new_key("doc", paris_evening) == f"2026/11/25/{fixed}.doc.pgp"


def test_delete_removes_and_is_idempotent(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("raw", NOW)
    store.write(key, b"x")

    assert store.delete(key) is True
    assert store.delete(key) is False
    assert not store.exists(key)
    with pytest.raises(NotFound):
        store.read(key)


def test_iter_keys_lists_blobs_sorted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    keys = [store.new_key(kind, NOW) for kind in ("raw", "doc", "manifest")]
    keys.append(store.new_key("raw", datetime(2025, 1, 2, tzinfo=UTC)))
    for key in keys:
        store.write(key, b"x")

    assert list(store.iter_keys()) == sorted(keys)


def test_iter_keys_on_missing_root_is_empty(tmp_path: Path) -> None:
    assert list(BlobStore(tmp_path / "absent").iter_keys()) == []


def test_free_bytes_before_root_exists(tmp_path: Path) -> None:
    assert BlobStore(tmp_path / "absent" / "deeper").free_bytes() > 0


def test_unsynced_writes_are_synced_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    store = BlobStore(tmp_path / "blobs")
    keys = [store.new_key("manifest", NOW) for _ in range(5)]
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    store.write(store.new_key("raw", NOW), b"first")  # makes (and fsyncs) the directories
    monkeypatch.setattr(os, "fsync", counting_fsync)
    for index, key in enumerate(keys):
        store.write(key, f"m{index}".encode(), sync=False, sync_dir=False)
    assert synced == []  # neither the files nor their directory yet
    store.sync_files(keys)
    assert len(synced) == 5
    store.sync_directory(store.directory_of(keys[0]))
    assert len(synced) == 6
    assert [store.read(key) for key in keys] == [f"m{i}".encode() for i in range(5)]


def test_syncing_a_missing_blob_is_a_storage_error(tmp_path: Path) -> None:
    from gateway.errors import StorageUnavailable

    store = BlobStore(tmp_path / "blobs")
    key = store.new_key("doc", NOW)
    with pytest.raises(StorageUnavailable):
        store.sync_files([key, key])


def test_a_days_directory_is_looked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "blobs")
    store.write(store.new_key("raw", NOW), b"first")
    looked: list[Path] = []
    is_dir = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: looked.append(self) or is_dir(self))
    for kind in ("raw", "doc", "manifest"):
        store.write(store.new_key(kind, NOW), b"x")
    assert looked == []


def test_a_directory_removed_behind_the_store_is_made_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    first = store.new_key("raw", NOW)
    store.write(first, b"first")
    shutil.rmtree(tmp_path / "blobs" / "2026")
    key = store.new_key("doc", NOW)
    store.write(key, b"again")
    assert store.read(key) == b"again"
    assert not store.exists(first)
