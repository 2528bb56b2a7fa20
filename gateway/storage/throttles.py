"""Failure counters and lock-outs by key (sender address, registration, client IP)."""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.storage.db import Reads
from gateway.storage.models import Throttle, table_of

THROTTLES = table_of(Throttle)


@functools.lru_cache(maxsize=8)
def _locked_keys(count: int) -> Select[tuple[str]]:
    """The read for `count` keys, built once per count: every message with a code checks its keys.

    One bound parameter per key rather than an expanding IN, whose list
    SQLAlchemy renders into the statement again at every execution.
    """
    return (
        select(THROTTLES.c.key)
        .where(
            THROTTLES.c.key.in_([bindparam(f"k{i}") for i in range(count)]),
            THROTTLES.c.locked_until > bindparam("now"),
        )
        .limit(1)
    )


def any_locked(reads: Reads, keys: list[str], now: datetime) -> bool:
    """Whether one of the keys is locked out now (one narrow read)."""
    if not keys:
        return False
    values: dict[str, object] = {f"k{i}": key for i, key in enumerate(keys)}
    values["now"] = now
    return reads.first(_locked_keys(len(keys)), values) is not None


class ThrottleRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def any_locked(self, keys: list[str], now: datetime) -> bool:
        return any_locked(Reads(self.session.connection()), keys, now)

    def locked_row(self, key: str, now: datetime) -> Throttle:
        """The key's row, created if missing, locked for the rest of the transaction."""
        session = self.session
        row = session.get(Throttle, key, with_for_update=True)
        if row is not None:
            return row
        try:
            with session.begin_nested():
                session.add(Throttle(key=key, failures=0, lockouts=0, window_started_at=now))
        except IntegrityError:
            pass  # another transaction created it: read that one
        row = session.get(Throttle, key, with_for_update=True, populate_existing=True)
        assert row is not None
        return row
