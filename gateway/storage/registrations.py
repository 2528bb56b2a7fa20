"""Registrations (court, measure, mailbox): every query about them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gateway.storage.db import Reads
from gateway.storage.models import MAX_ID, Court, Registration


@dataclass(frozen=True, slots=True)
class ActiveRegistration:
    """An active registration as the accept path reads it: a plain row, not an ORM object.

    Every message reads all its sender's registrations (a guardian may hold
    many measures); building ORM instances for them was a tenth of the CPU
    of a 5 KB message.
    """

    id: int
    court_id: int
    measure: str
    address: str
    address_key: str


# Built once: every message looks its sender's registrations up.
ACTIVE_FOR_ADDRESS = select(
    Registration.id, Registration.court_id, Registration.measure, Registration.address,
    Registration.address_key,
).where(
    Registration.address_key == bindparam("address_key"), Registration.status == "active"
)  # fmt: skip


def active_for_address(reads: Reads, address_key: str) -> list[ActiveRegistration]:
    """The address's active registrations, as plain rows (the accept path)."""
    rows = reads.rows(ACTIVE_FOR_ADDRESS, {"address_key": address_key})
    return [ActiveRegistration(*row) for row in rows]


class RegistrationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, registration_id: int) -> Registration | None:
        return self.session.get(Registration, registration_id)

    def active(self, court_id: int, measure: str, address_key: str) -> Registration | None:
        return self.session.scalars(
            select(Registration).where(
                Registration.court_id == court_id,
                Registration.measure == measure,
                Registration.address_key == address_key,
                Registration.status == "active",
            )
        ).one_or_none()

    def active_for_address(self, address_key: str) -> list[ActiveRegistration]:
        return active_for_address(Reads(self.session.connection()), address_key)

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

    def page(
        self,
        courts: Collection[str] | None,
        status: str | None,
        after_id: int,
        limit: int,
    ) -> Sequence[tuple[Registration, str]]:
        """(registration, court code) with ids above `after_id`, in id order, filtered."""
        query = (
            select(Registration, Court.code)
            .join(Court, Court.id == Registration.court_id)
            .where(Registration.id > min(after_id, MAX_ID))
            .order_by(Registration.id)
            .limit(limit)
        )
        if courts is not None:
            query = query.where(Court.code.in_(list(courts)))
        if status is not None:
            query = query.where(Registration.status == status)
        return [(row[0], row[1]) for row in self.session.execute(query).all()]
