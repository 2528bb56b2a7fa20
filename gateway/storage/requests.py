"""Requests and their codes: numbering, look-ups, the conditional code use, sealing, listings."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.model import Channel, RequestKind, RequestStatus
from gateway.storage.models import (
    MAX_ID,
    Code,
    Court,
    Registration,
    Request,
    RequestCounter,
    table_of,
)

REQUESTS, CODES = table_of(Request), table_of(Code)
# Statements built once: they run for every message with a code.
CODE_BY_HASH = select(Code).where(Code.code_hmac == bindparam("hmac"))
CONSUME_CODE = (
    update(CODES)
    .where(
        CODES.c.id == bindparam("code_id"),
        CODES.c.expires_at > bindparam("now"),
        CODES.c.closed_at.is_(None),
    )
    .values(use_count=CODES.c.use_count + 1, last_used_at=bindparam("used_at"))
)
COUNT_SUBMISSION = (
    update(REQUESTS)
    .where(REQUESTS.c.id == bindparam("request_id"))
    .values(submission_count=REQUESTS.c.submission_count + 1, updated_at=bindparam("now"))
    .returning(REQUESTS.c.reference, REQUESTS.c.submission_count)
)


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """What a paged listing of requests keeps: every field that is set must match."""

    courts: Collection[str] | None = None
    """The caller's scope: only these courts (None: every court)."""
    court: str | None = None
    status: str | None = None
    kind: str | None = None
    since: datetime | None = None
    """Changed at or after this time (`updated_at`)."""


class RequestRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, request_id: int, *, for_update: bool = False) -> Request | None:
        return self.session.get(Request, request_id, with_for_update=for_update)

    def by_reference(self, reference: str) -> Request | None:
        return self.session.scalars(
            select(Request).where(Request.reference == reference)
        ).one_or_none()

    def open(
        self,
        registration: Registration,
        court_code: str,
        kind: RequestKind,
        channel: Channel,
        now: datetime,
    ) -> Request:
        """Create a request with the next reference <COURT>-<YYYY>-<NNNNNN>."""
        number = self._next_number(registration.court_id, now.year)
        request = Request(
            reference=f"{court_code}-{now.year:04d}-{number:06d}",
            court_id=registration.court_id,
            registration_id=registration.id,
            kind=kind.value,
            channel=channel.value,
            status=RequestStatus.OPEN.value,
            submission_count=0,
            opened_at=now,
            updated_at=now,
        )
        self.session.add(request)
        self.session.flush()
        return request

    def _next_number(self, court_id: int, year: int) -> int:
        # The counter row is locked for the rest of the transaction (FOR UPDATE on
        # PostgreSQL; SQLite transactions already hold the write lock).
        session = self.session
        for _ in range(3):
            counter = session.get(RequestCounter, (court_id, year), with_for_update=True)
            if counter is not None:
                counter.last_number += 1
                return counter.last_number
            try:
                with session.begin_nested():
                    session.add(RequestCounter(court_id=court_id, year=year, last_number=1))
                return 1
            except IntegrityError:
                continue  # another node created it first: lock it and increment
        raise RuntimeError("could not allocate a request number")

    def count_submission(self, request_id: int, now: datetime) -> tuple[str, int]:
        """One more submission: (request reference, its number). Takes the row lock too."""
        counted = (
            self.session.connection()
            .execute(COUNT_SUBMISSION, {"request_id": request_id, "now": now})
            .one()
        )
        return str(counted[0]), int(counted[1])

    def expired_open(self, now: datetime, limit: int = 500) -> Sequence[tuple[Request, Code]]:
        """Open requests whose code has expired, with their code (for the sweeper)."""
        rows = self.session.execute(
            select(Request, Code)
            .join(Code, Code.request_id == Request.id)
            .where(Request.status == RequestStatus.OPEN.value, Code.expires_at <= now)
            .limit(limit)
        ).all()
        return [(request, code) for request, code in rows]

    def open_past(self, before: datetime) -> Sequence[str]:
        """References of requests still open although their code expired before `before`."""
        return self.session.scalars(
            select(Request.reference)
            .join(Code, Code.request_id == Request.id)
            .where(Request.status == RequestStatus.OPEN.value, Code.expires_at < before)
        ).all()

    def listing(
        self, court: str | None = None, status: str | None = None
    ) -> Sequence[tuple[Request, str, str]]:
        """(request, court code, measure) in creation order, filtered."""
        query = (
            select(Request, Court.code, Registration.measure)
            .join(Court, Court.id == Request.court_id)
            .join(Registration, Registration.id == Request.registration_id)
            .order_by(Request.id)
        )
        if court:
            query = query.where(Court.code == court)
        if status:
            query = query.where(Request.status == status)
        return [(req, code, measure) for req, code, measure in self.session.execute(query).all()]

    def page(
        self, wanted: RequestFilter, after_id: int, limit: int
    ) -> Sequence[tuple[Request, str, str]]:
        """(request, court code, measure) with ids above `after_id`, in id order, filtered."""
        query = (
            select(Request, Court.code, Registration.measure)
            .join(Court, Court.id == Request.court_id)
            .join(Registration, Registration.id == Request.registration_id)
            .where(Request.id > min(after_id, MAX_ID))
            .order_by(Request.id)
            .limit(limit)
        )
        if wanted.courts is not None:
            query = query.where(Court.code.in_(list(wanted.courts)))
        if wanted.court:
            query = query.where(Court.code == wanted.court)
        if wanted.status:
            query = query.where(Request.status == wanted.status)
        if wanted.kind:
            query = query.where(Request.kind == wanted.kind)
        if wanted.since is not None:
            query = query.where(Request.updated_at >= wanted.since)
        return [(req, code, measure) for req, code, measure in self.session.execute(query).all()]

    def scoped(
        self, reference: str, courts: Collection[str] | None
    ) -> tuple[Request, str, str] | None:
        """(request, court code, measure) by reference, None if unknown or outside `courts`."""
        query = (
            select(Request, Court.code, Registration.measure)
            .join(Court, Court.id == Request.court_id)
            .join(Registration, Registration.id == Request.registration_id)
            .where(Request.reference == reference)
        )
        if courts is not None:
            query = query.where(Court.code.in_(list(courts)))
        row = self.session.execute(query).one_or_none()
        return None if row is None else (row[0], row[1], row[2])


class CodeRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, code_id: int) -> Code | None:
        return self.session.get(Code, code_id)

    def by_hmac(self, code_hmac: str) -> Code | None:
        return self.session.scalars(CODE_BY_HASH, {"hmac": code_hmac}).one_or_none()

    def for_request(self, request_id: int) -> Code | None:
        return self.session.scalars(select(Code).where(Code.request_id == request_id)).first()

    def add(self, code: Code) -> Code:
        self.session.add(code)
        self.session.flush()
        return code

    def issued_since(self, registration_id: int, since: datetime) -> int:
        count = self.session.scalar(
            select(func.count(Code.id)).where(
                Code.registration_id == registration_id, Code.issued_at > since
            )
        )
        return int(count or 0)

    def consume(self, code_id: int, now: datetime) -> bool:
        """Count one use, only if the code is still live: one conditional UPDATE."""
        result = self.session.connection().execute(
            CONSUME_CODE, {"code_id": code_id, "now": now, "used_at": now}
        )
        return bool(result.rowcount == 1)
