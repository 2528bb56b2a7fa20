"""Named leases in the database, so two gateways sharing it never run the same job at once.

Taken with a conditional UPDATE (ours, or expired) and, when no row exists,
an INSERT that the primary key lets only one node win: portable between
SQLite and PostgreSQL, no advisory-lock dialect.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError

from gateway.model import Clock
from gateway.storage.db import Database
from gateway.storage.models import Lease


def new_holder_id() -> str:
    """host:pid:random, unique per puller (two in one process must not share a lease)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLost(Exception):
    """Another node holds the lease now; the holder must stop touching the mailbox."""


class DbLease:
    """One named lease held by `holder` for `ttl` at a time; renew before it runs out."""

    def __init__(self, db: Database, name: str, holder: str, ttl: timedelta, clock: Clock) -> None:
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.clock = clock

    def acquire(self) -> bool:
        """Take or extend the lease; False when another holder's lease is still running."""
        now = self.clock()
        with self.db.transaction() as session:
            result = session.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    or_(Lease.holder == self.holder, Lease.expires_at < now),
                )
                .values(holder=self.holder, expires_at=now + self.ttl)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
        return self._insert(now)

    def take_if_expired(self) -> bool:
        """Take the lease only if nobody holds it, ourselves included (a periodic job's turn).

        Held for `ttl` from now and not renewed: while it runs, no node (this
        one either) takes it again, so the job runs once per `ttl` cluster-wide.
        """
        now = self.clock()
        with self.db.transaction() as session:
            result = session.execute(
                update(Lease)
                .where(Lease.name == self.name, Lease.expires_at < now)
                .values(holder=self.holder, expires_at=now + self.ttl)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                return True
        return self._insert(now)

    def _insert(self, now: datetime) -> bool:
        try:
            with self.db.transaction() as session:
                session.add(Lease(name=self.name, holder=self.holder, expires_at=now + self.ttl))
        except IntegrityError:  # the row exists: someone else's, and not expired
            return False
        return True

    def renew(self) -> None:
        """Extend the lease, or raise LeaseLost."""
        if not self.acquire():
            raise LeaseLost(f"lease {self.name} is held by another node")

    def release(self) -> None:
        with self.db.transaction() as session:
            session.execute(
                delete(Lease)
                .where(Lease.name == self.name, Lease.holder == self.holder)
                .execution_options(synchronize_session=False)
            )
