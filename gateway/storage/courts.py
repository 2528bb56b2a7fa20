"""Courts and their OpenPGP keys: every query about them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateway.storage.db import Reads
from gateway.storage.models import Court, CourtKey, table_of

COURT_KEYS = table_of(CourtKey)
# Built once: every submission reads its court's active key fingerprints.
ACTIVE_FINGERPRINTS = select(COURT_KEYS.c.fingerprint).where(
    COURT_KEYS.c.court_id == bindparam("court_id"), COURT_KEYS.c.status == "active"
)
ACTIVE_KEYS = (
    select(COURT_KEYS.c.fingerprint, COURT_KEYS.c.armored)
    .where(COURT_KEYS.c.court_id == bindparam("court_id"), COURT_KEYS.c.status == "active")
    .order_by(COURT_KEYS.c.id)
)


COURTS = table_of(Court)
COURT_BY_CODE = select(COURTS.c.id, COURTS.c.name).where(COURTS.c.code == bindparam("code"))


def court_by_code(reads: Reads, code: str) -> tuple[int, str] | None:
    """(id, name) of the court with this code, if any (one narrow read)."""
    row = reads.first(COURT_BY_CODE, {"code": code})
    return None if row is None else (row[0], row[1])


def active_fingerprints(reads: Reads, court_id: int) -> tuple[str, ...]:
    """The fingerprints of the court's active keys, sorted (one narrow query)."""
    rows = reads.rows(ACTIVE_FINGERPRINTS, {"court_id": court_id})
    return tuple(sorted(row[0] for row in rows))


def active_keys(reads: Reads, court_id: int) -> list[tuple[str, str]]:
    """(fingerprint, armoured public key) of the court's active keys, in the order added."""
    rows = reads.rows(ACTIVE_KEYS, {"court_id": court_id})
    return [(row[0], row[1]) for row in rows]


class CourtRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, court_id: int) -> Court | None:
        return self.session.get(Court, court_id)

    def by_code(self, code: str, *, for_update: bool = False) -> Court | None:
        """The court, its row locked to the transaction's end if `for_update` (PostgreSQL)."""
        query = select(Court).where(Court.code == code)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def add(self, code: str, name: str, now: datetime) -> Court:
        court = Court(code=code, name=name, created_at=now)
        self.session.add(court)
        self.session.flush()
        return court

    def all(self) -> Sequence[Court]:
        return self.session.scalars(select(Court).order_by(Court.code)).all()

    def keys(self, court_id: int, *, active_only: bool = True) -> Sequence[CourtKey]:
        query = select(CourtKey).where(CourtKey.court_id == court_id)
        if active_only:
            query = query.where(CourtKey.status == "active")
        return self.session.scalars(query.order_by(CourtKey.id)).all()

    def key(self, court_id: int, fingerprint: str) -> CourtKey | None:
        return self.session.scalars(
            select(CourtKey).where(
                CourtKey.court_id == court_id, CourtKey.fingerprint == fingerprint
            )
        ).one_or_none()

    def add_key(self, key: CourtKey) -> CourtKey:
        self.session.add(key)
        self.session.flush()
        return key
