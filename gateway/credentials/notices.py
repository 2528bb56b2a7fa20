"""Expiry notices: a credential's address is told, once, that it expires within the notice period.

A periodic job under `serve`.  A database lease makes one node of a
cluster do the pass; the conditional UPDATE that marks a credential as
noticed makes each notice exactly-once even if two passes overlapped.  The
notice is an outbox row (`credential_expiry`) committed with that mark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from gateway.ingest.manifest import rfc3339
from gateway.model import Clock
from gateway.outbox.templates import format_utc
from gateway.storage.audit import append_event
from gateway.storage.credentials import CredentialRepository
from gateway.storage.db import Database
from gateway.storage.leases import DbLease
from gateway.storage.outbox import enqueue

log = logging.getLogger("gateway.credentials")
NOTICE_INTERVAL = 3600.0
"""Seconds between passes: a notice comes weeks ahead, an hour late is harmless."""
KIND = "credential_expiry"


class ExpiryNotifier:
    """Queues the expiry notices due now; `run` repeats that every `interval` seconds."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        notice: timedelta,
        lease: DbLease,
        interval: float = NOTICE_INTERVAL,
    ) -> None:
        self.db = db
        self.clock = clock
        self.notice = notice
        self.lease = lease
        self.interval = interval

    def notify_once(self) -> int:
        """Queue every notice due; returns how many were queued."""
        now = self.clock()
        with self.db.reading() as session:
            due = list(CredentialRepository(session).due_for_notice(now, now + self.notice))
        return sum(1 for credential_id in due if self._notify(credential_id))

    def _notify(self, credential_id: int) -> bool:
        now = self.clock()
        with self.db.transaction() as session:
            credentials = CredentialRepository(session)
            if not credentials.claim_notice(credential_id, now):
                return False  # another pass queued it meanwhile
            credential = credentials.get(credential_id)
            assert credential is not None
            enqueue(
                session,
                kind=KIND,
                recipient=credential.address_key,
                values={
                    "credential_id": str(credential.id),
                    "software": credential.software,
                    "address": credential.address_key,
                    "issued_at": format_utc(credential.created_at),
                    "expires_at": format_utc(credential.expires_at),
                },
                now=now,
                related_reference=f"credential:{credential.id}",
            )
            append_event(
                session, now, "credential.expiry_notice", actor="gateway",
                subject=f"credential:{credential.id}",
                data={"expires_at": rfc3339(credential.expires_at)},
            )  # fmt: skip
        return True

    def pass_if_leader(self) -> int:
        """One pass, if this node holds the lease (else another node does the work)."""
        if not self.lease.acquire():
            return 0
        return self.notify_once()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    queued = await asyncio.to_thread(self.pass_if_leader)
                    if queued:
                        log.info("credential expiry notices queued", extra={"count": queued})
                except Exception:
                    log.exception("credential expiry notices failed; will retry")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)
