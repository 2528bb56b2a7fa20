"""Courts and their OpenPGP keys: every query about them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateway.storage.models import Court, CourtKey

# Built once: every submission reads its court's active key fingerprints.
ACTIVE_FINGERPRINTS = select(CourtKey.fingerprint).where(
    CourtKey.court_id == bindparam("court_id"), CourtKey.status == "active"
)


class CourtRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, court_id: int) -> Court | None:
        return self.session.get(Court, court_id)

    def by_code(self, code: str) -> Court | None:
        return self.session.scalars(select(Court).where(Court.code == code)).one_or_none()

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

    def active_fingerprints(self, court_id: int) -> tuple[str, ...]:
        """The fingerprints of the court's active keys, sorted (one narrow query)."""
        return tuple(sorted(self.session.scalars(ACTIVE_FINGERPRINTS, {"court_id": court_id})))

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
