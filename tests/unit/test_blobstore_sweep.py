"""BlobStore temporary files: ignored by listings, swept once stale."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.storage.blobstore import BlobStore

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _temp(directory: Path, name: str, age: timedelta) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"partial")
    mtime = (NOW - age).timestamp()
    os.utime(path, (mtime, mtime))
    return path


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.new_key("raw", NOW)
    store.write(key, b"kept")
    day = (tmp_path / key).parent
    stale = _temp(day, ".abc.raw.pgp.00ff.tmp", timedelta(hours=2))
    fresh = _temp(day, ".def.raw.pgp.11ee.tmp", timedelta(minutes=1))
    foreign = _temp(day, "notes.tmp", timedelta(days=9))

    removed = store.sweep_temp(timedelta(hours=1), now=NOW)

    assert removed == 1
    assert not stale.exists()
    assert fresh.exists()
    assert foreign.exists()
    assert store.read(key) == b"kept"


def test_iter_keys_ignores_temp_and_foreign_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    key = store.new_key("doc", NOW)
    store.write(key, b"x")
    day = (tmp_path / key).parent
    _temp(day, f".{Path(key).name}.00ff.tmp", timedelta(0))
    _temp(day, "README", timedelta(0))
    _temp(tmp_path, "stray.pgp", timedelta(0))

    assert list(store.iter_keys()) == [key]


def test_sweep_on_missing_root_is_noop(tmp_path: Path) -> None:
    assert BlobStore(tmp_path / "absent").sweep_temp(timedelta(0), now=NOW) == 0
