"""Repositories: every SQL query the gateway makes about courts, keys and registrations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateway.storage.models import Court, CourtKey, Registration

# Built once: every message looks its sender's registrations up.
ACTIVE_FOR_ADDRESS = select(Registration).where(
    Registration.address_key == bindparam("address_key"), Registration.status == "active"
)


class CourtRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

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


class RegistrationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def active(self, court_id: int, measure: str, address_key: str) -> Registration | None:
        return self.session.scalars(
            select(Registration).where(
                Registration.court_id == court_id,
                Registration.measure == measure,
                Registration.address_key == address_key,
                Registration.status == "active",
            )
        ).one_or_none()

    def active_for_address(self, address_key: str) -> Sequence[Registration]:
        return self.session.scalars(ACTIVE_FOR_ADDRESS, {"address_key": address_key}).all()

    def add(self, registration: Registration) -> Registration:
        self.session.add(registration)
        self.session.flush()
        return registration

    def listing(
        self, court_id: int | None = None, *, include_revoked: bool = True
    ) -> Sequence[tuple[Registration, str]]:
        query = select(Registration, Court.code).join(Court, Court.id == Registration.court_id)
        if court_id is not None:
            query = query.where(Registration.court_id == court_id)
        if not include_revoked:
            query = query.where(Registration.status == "active")
        query = query.order_by(Court.code, Registration.measure, Registration.address_key)
        return [(row[0], row[1]) for row in self.session.execute(query).all()]
