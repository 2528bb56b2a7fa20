"""The mailbox lease on a real database (SQLite file and PostgreSQL): one holder at a time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from gateway.storage.db import Database
from gateway.storage.leases import DbLease, LeaseLost


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _lease(db: Database, holder: str, clock: Clock) -> DbLease:
    return DbLease(db, "imap:intake", holder, timedelta(minutes=5), clock)


def test_imap_lease_one_holder_until_release_or_expiry(db: Database) -> None:
    clock = Clock()
    first, second = _lease(db, "node-a", clock), _lease(db, "node-b", clock)
    assert first.acquire()
    assert not second.acquire()
    assert first.acquire()  # renewing one's own lease
    first.release()
    assert second.acquire()

    clock.now += timedelta(minutes=6)  # node-b died without releasing
    assert first.acquire()
    with pytest.raises(LeaseLost):
        second.renew()
    second.release()  # releasing someone else's lease does nothing
    assert not second.acquire()


def test_imap_lease_concurrent_takers_one_wins(db: Database) -> None:
    clock = Clock()
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def take(index: int) -> None:
        lease = _lease(db, f"node-{index}", clock)
        barrier.wait()
        results.append(lease.acquire())

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 5 + [True]
