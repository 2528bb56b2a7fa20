"""Removing what interrupted writes leave in the blob store: blobs no row names, temporary files.

A submission's blobs are written before its rows are committed, so a crash
(SIGKILL, power loss) or a commit that never lands leaves blobs no row refers
to.  Nothing was acknowledged for them: the client got no `250` and sends the
message again.  They are removed once older than `SWEEP_AFTER`, by which time
no transaction can still be about to commit them (a group commit settles
within seconds).  The sweep lists the store first and asks the database
afterwards, and asks again just before deleting, so a row committed meanwhile
always wins.  Under `serve` it runs every `SWEEP_INTERVAL` on one node of the
cluster at a time (a database lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.errors import NotFound
from gateway.model import Clock
from gateway.storage.audit import append_event
from gateway.storage.blobstore import BlobStorage
from gateway.storage.db import Database
from gateway.storage.leases import DbLease
from gateway.storage.submissions import BlobRepository

log = logging.getLogger("gateway.storage")
SWEEP_AFTER = timedelta(hours=1)
"""A blob without a row younger than this may belong to a transaction still in flight."""
SWEEP_INTERVAL = 900.0
LEASE_NAME = "blob-sweep"
_CHUNK = 500


@dataclass
class SweepReport:
    orphans: list[str] = field(default_factory=list)
    """The blobs removed (no row named them)."""
    temporaries: int = 0
    """Temporary files of interrupted writes removed."""


def sweep_blobs(
    db: Database, blobs: BlobStorage, now: datetime, after: timedelta = SWEEP_AFTER
) -> SweepReport:
    """Remove every blob older than `after` that no row names, and stale temporary files."""
    report = SweepReport()
    chunk: list[str] = []
    for key in blobs.iter_keys():
        chunk.append(key)
        if len(chunk) == _CHUNK:
            report.orphans.extend(_sweep_chunk(db, blobs, chunk, now - after))
            chunk = []
    report.orphans.extend(_sweep_chunk(db, blobs, chunk, now - after))
    report.temporaries = blobs.sweep_temp(after, now=now)
    if report.orphans:
        with db.transaction() as session:
            append_event(
                session,
                now,
                "blob.orphans_removed",
                actor="sweeper",
                data={"count": len(report.orphans), "keys": report.orphans[:100]},
            )
        log.info("removed %d orphan blob(s) of interrupted writes", len(report.orphans))
    return report


def _sweep_chunk(db: Database, blobs: BlobStorage, keys: list[str], cutoff: datetime) -> list[str]:
    if not keys:
        return []
    with db.reading() as session:
        recorded = BlobRepository(session).recorded(keys)
    unnamed = [key for key in keys if key not in recorded]
    old = [key for key in unnamed if _older(blobs, key, cutoff)]
    if not old:
        return []
    with db.reading() as session:  # asked again: a row committed meanwhile keeps its blob
        recorded = BlobRepository(session).recorded(old)
    still = [key for key in old if key not in recorded]
    return [key for key in still if blobs.delete(key)]


def _older(blobs: BlobStorage, key: str, cutoff: datetime) -> bool:
    try:
        return blobs.modified_at(key) < cutoff
    except NotFound:  # removed since it was listed
        return False


class BlobSweeper:
    """The sweep under `serve`: at start, then every `interval` seconds, on one node at a time."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStorage,
        clock: Clock,
        lease: DbLease,
        interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.lease = lease
        self.interval = interval

    def sweep_once(self) -> SweepReport | None:
        """One sweep if this node holds the lease (taking it if free); None otherwise."""
        if not self.lease.acquire():
            return None
        return sweep_blobs(self.db, self.blobs, self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.sweep_once)
                except Exception:
                    log.exception("blob sweep failed; will retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)
