"""The blob sweep removes what interrupted writes left, and only that, on one node at a time."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from gateway.audit.check import run_check
from gateway.storage.blobstore import BlobStore
from gateway.storage.blobsweep import SWEEP_AFTER, BlobSweeper, sweep_blobs
from gateway.storage.db import Database
from gateway.storage.leases import DbLease
from gateway.storage.models import AuditEvent, Blob


def _age(store: BlobStore, key: str, by: timedelta) -> None:
    path = store.root.joinpath(*key.split("/"))
    stamp = (datetime.now(UTC) - by).timestamp()
    os.utime(path, (stamp, stamp))


def test_sigkill_orphans_are_swept_and_the_check_then_passes(db: Database, tmp_path: Path) -> None:
    """Blobs written for a commit that never happened (a SIGKILL) used to stay for good."""
    store = BlobStore(tmp_path / "blobs")
    now = datetime.now(UTC)
    kept = store.new_key("raw", now)
    store.write(kept, b"committed")
    with db.transaction() as session:
        session.add(Blob(key=kept, kind="raw", sha256=_sha(b"committed"), size=9, created_at=now))
    old_orphan, young_orphan = store.new_key("doc", now), store.new_key("manifest", now)
    store.write(old_orphan, b"never committed")
    store.write(young_orphan, b"in flight")
    for key in (kept, old_orphan):
        _age(store, key, SWEEP_AFTER + timedelta(minutes=5))
    temp = store.root / kept.rsplit("/", 1)[0] / f".{old_orphan.rsplit('/', 1)[1]}.0123.tmp"
    temp.write_bytes(b"half a write")
    stamp = (now - SWEEP_AFTER * 2).timestamp()
    os.utime(temp, (stamp, stamp))
    assert not run_check(db, store, now).ok  # the old orphan is named

    report = sweep_blobs(db, store, now)

    assert report.orphans == [old_orphan]
    assert report.temporaries == 1 and not temp.exists()
    assert store.exists(kept) and store.exists(young_orphan)
    findings = run_check(db, store, now)
    assert findings.ok, findings.problems
    with db.reading() as session:
        actions = list(session.scalars(select(AuditEvent.action)))
    assert "blob.orphans_removed" in actions


def test_blob_sweep_runs_on_one_node_at_a_time(db: Database, tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")

    def sweeper(holder: str) -> BlobSweeper:
        lease = DbLease(db, "blob-sweep", holder, timedelta(minutes=30), lambda: datetime.now(UTC))
        return BlobSweeper(db, store, lambda: datetime.now(UTC), lease)

    first, second = sweeper("node-a"), sweeper("node-b")
    assert first.sweep_once() is not None
    assert second.sweep_once() is None  # node-a holds the lease
    assert first.sweep_once() is not None  # and keeps it between sweeps
    first.lease.release()
    assert second.sweep_once() is not None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
