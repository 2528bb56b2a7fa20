"""The retention purge (`retention.days`): old finished requests go, rows and blobs; holds keep one.

A request is due when its status is final (accepted, rejected, or sealed and
never acknowledged by the greffe), it is not held, and its last change
(`updated_at`, the time it reached that status) is more than
`retention.days` ago.  `retention.days = 0` keeps everything.

The order of the deletes, and why.  Per request:

1. one transaction locks the request row, reads its conditions again (a hold
   or a status change committed meanwhile wins), deletes the rows that use
   its blobs (documents, submissions, its code, its outbox rows and their
   attempts, the request itself; an IMAP state row loses its link but stays),
   marks its blob rows `purged_at`, and appends a `retention.purged` audit
   event that names the references (never what they hold);
2. each marked blob is deleted through the blob store;
3. the marked blob rows are deleted.

A crash after step 1 leaves marked blob rows whose blobs may still exist:
every purge starts by finishing those (steps 2 and 3), and `gateway check`
counts them as "purging", neither orphans nor missing.  No crash leaves a
row that an export or the check would follow to a missing blob: deleting
the blobs first would (submissions pointing at nothing), and deleting the
rows first without the mark would leave orphan blobs that nothing removes.
Audit events stay: the chain is append-only, and they hold no content.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.errors import NotFound
from gateway.ingest.manifest import rfc3339
from gateway.model import Clock
from gateway.storage.audit import append_event, lock_head
from gateway.storage.blobstore import BlobStorage
from gateway.storage.db import Database
from gateway.storage.requests import (
    PurgeCandidate,
    PurgedRequest,
    PurgeRepository,
    RequestRepository,
)

log = logging.getLogger("gateway.retention")
BATCH = 100
"""Requests read per query; each is then purged in a transaction of its own."""


@dataclass
class PurgeReport:
    """What a purge did: the requests deleted and the blobs removed from the store."""

    purged: list[PurgedRequest] = field(default_factory=list)
    blobs_deleted: int = 0


class Retention:
    """Lists and purges requests past retention; holds and releases them."""

    def __init__(
        self, db: Database, blobs: BlobStorage, clock: Clock, days: int, *, batch: int = BATCH
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.clock = clock
        self.days = days
        self.batch = batch

    def cutoff(self, now: datetime) -> datetime | None:
        """Requests that reached their final status before this are due (None: keep forever)."""
        return now - timedelta(days=self.days) if self.days > 0 else None

    def due(self) -> list[PurgeCandidate]:
        """Every request a purge would delete now (`retention purge --dry-run`)."""
        before = self.cutoff(self.clock())
        if before is None:
            return []
        with self.db.reading() as session:
            return PurgeRepository(session).due(before)

    def purge(self, actor: str) -> PurgeReport:
        """Finish any interrupted purge, then purge every due request, one transaction each."""
        report = PurgeReport(blobs_deleted=self._finish_marked())
        before = self.cutoff(self.clock())
        after_id = 0
        while before is not None:
            with self.db.reading() as session:
                batch = PurgeRepository(session).due(before, after_id=after_id, limit=self.batch)
            if not batch:
                break
            for candidate in batch:
                after_id = candidate.request_id
                purged = self._purge_one(candidate.request_id, before, actor)
                if purged is not None:
                    report.purged.append(purged)
                    report.blobs_deleted += self._remove_blobs(purged.blob_keys)
        if report.purged or report.blobs_deleted:
            log.info(
                "retention purge",
                extra={"requests": len(report.purged), "blobs": report.blobs_deleted},
            )
        return report

    def _purge_one(self, request_id: int, before: datetime, actor: str) -> PurgedRequest | None:
        now = self.clock()
        with self.db.transaction() as session:
            lock_head(session)  # the head first, as every appender does: one lock order
            purged = PurgeRepository(session).delete_request(request_id, before, now)
            if purged is None:
                return None
            append_event(
                session,
                now,
                "retention.purged",
                actor=actor,
                subject=purged.reference,
                data=_event_data(purged, self.days),
            )
        return purged

    def _remove_blobs(self, keys: Sequence[str]) -> int:
        """Steps 2 and 3: the blobs, then their marked rows; how many blobs existed."""
        removed = sum(1 for key in keys if self.blobs.delete(key))
        with self.db.transaction() as session:
            PurgeRepository(session).forget_blobs(keys)
        return removed

    def _finish_marked(self) -> int:
        """Remove the blobs an interrupted purge marked (their rows are gone already)."""
        removed = 0
        while True:
            with self.db.reading() as session:
                keys = PurgeRepository(session).marked_blobs(limit=500)
            if not keys:
                return removed
            removed += self._remove_blobs(keys)

    # -- holds ----------------------------------------------------------------------
    def set_held(self, reference: str, held: bool, actor: str) -> bool:
        """Hold a request (kept whatever its age) or release it; False if already so."""
        now = self.clock()
        reference = reference.strip().upper()
        with self.db.transaction() as session:
            lock_head(session)
            changed = RequestRepository(session).set_held(reference, held, now)
            if changed is None:
                raise NotFound(f"no request {reference}")
            if changed:
                action = "request.held" if held else "request.unheld"
                append_event(session, now, action, actor=actor, subject=reference)
        return changed


def _event_data(purged: PurgedRequest, days: int) -> dict[str, Any]:
    return {
        "submissions": purged.submissions,
        "status": purged.status,
        "final_at": rfc3339(purged.final_at),
        "blobs": len(purged.blob_keys),
        "retention_days": days,
    }
