"""Requests and their codes: numbering, look-ups, code use, sealing, review moves, listings,
holds, the purge."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Delete,
    Update,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.model import Channel, RequestKind, RequestStatus
from gateway.storage.db import Reads, writes_of
from gateway.storage.models import (
    MAX_ID,
    Blob,
    Code,
    Court,
    Document,
    ImapMessage,
    Outbox,
    OutboxAttempt,
    Registration,
    Request,
    RequestCounter,
    Submission,
    table_of,
)
from gateway.storage.registrations import ActiveRegistration

REQUESTS, CODES, COURTS = table_of(Request), table_of(Code), table_of(Court)
REGISTRATIONS = table_of(Registration)
# Statements built once: they run for every message with a code.  The code's
# registration is joined only when it is an active one of the sender's: that
# is the whole check that the code is the sender's, in the same read.
CODE_BY_HASH = (
    select(
        CODES.c.id, CODES.c.registration_id, CODES.c.expires_at, CODES.c.closed_at,
        REQUESTS.c.id, REQUESTS.c.reference, REQUESTS.c.kind, REQUESTS.c.status,
        COURTS.c.id, COURTS.c.code, COURTS.c.name,
        REGISTRATIONS.c.court_id, REGISTRATIONS.c.measure, REGISTRATIONS.c.address,
    )
    .join_from(CODES, REQUESTS, REQUESTS.c.id == CODES.c.request_id)
    .join(COURTS, COURTS.c.id == REQUESTS.c.court_id)
    .outerjoin(
        REGISTRATIONS,
        (REGISTRATIONS.c.id == CODES.c.registration_id)
        & (REGISTRATIONS.c.address_key == bindparam("sender_key"))
        & (REGISTRATIONS.c.status == "active"),
    )
    .where(CODES.c.code_hmac == bindparam("hmac"))
)  # fmt: skip
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
class CodeRow:
    """A code with its request and court, as a message's code check reads it: a plain row.

    One joined read per message; ORM instances of the three rows cost more
    than the read itself.
    """

    id: int
    registration_id: int
    expires_at: datetime
    closed_at: datetime | None
    request_id: int
    request_reference: str
    request_kind: str
    request_status: str
    court_id: int
    court_code: str
    court_name: str
    registration: ActiveRegistration | None
    """The code's registration when it is an active one of the sender's; None: the code
    is someone else's, or its registration was revoked."""


def code_by_hmac(reads: Reads, code_hmac: str, sender_key: str) -> CodeRow | None:
    """The code with this keyed hash, its request, its court and, if it is an active one of
    `sender_key`'s, its registration (None: no such code)."""
    row = reads.first(CODE_BY_HASH, {"hmac": code_hmac, "sender_key": sender_key})
    if row is None:
        return None
    (code_id, registration_id, expires_at, closed_at, request_id, reference, kind, status,
     court_id, court_code, court_name, reg_court_id, measure, address) = row  # fmt: skip
    registration = (
        None
        if measure is None  # NOT NULL in the table: only the outer join leaves it empty
        else ActiveRegistration(registration_id, reg_court_id, measure, address, sender_key)
    )
    return CodeRow(
        code_id, registration_id, expires_at, closed_at, request_id, reference, kind, status,
        court_id, court_code, court_name, registration,
    )  # fmt: skip


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
        registration: Registration | ActiveRegistration,
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

    def open_sealed(
        self,
        registration: Registration | ActiveRegistration,
        court_code: str,
        kind: RequestKind,
        channel: Channel,
        now: datetime,
    ) -> Request:
        """A request opened and sealed at once, its one submission counted (teletransmission)."""
        request = self.open(registration, court_code, kind, channel, now)
        request.status = RequestStatus.SEALED.value
        request.sealed_at = now
        request.submission_count = 1
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
        counted = writes_of(self.session).one(
            COUNT_SUBMISSION, {"request_id": request_id, "now": now}
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

    def for_review(self, reference: str) -> tuple[Request, Court, Registration] | None:
        """A request with its court and registration, for a review action on it."""
        row = self.session.execute(
            select(Request, Court, Registration)
            .join(Court, Court.id == Request.court_id)
            .join(Registration, Registration.id == Request.registration_id)
            .where(Request.reference == reference)
        ).one_or_none()
        return None if row is None else (row[0], row[1], row[2])

    def move(
        self,
        request_id: int,
        sources: Collection[str],
        target: str,
        now: datetime,
        *,
        reason: str | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> bool:
        """Set the status to `target` only if it is still one of `sources`: one conditional
        UPDATE, so of two clerks moving the same request only one succeeds.

        The request counts as sealed from then on (`sealed_at` kept if already set).
        """
        result = self.session.connection().execute(
            update(REQUESTS)
            .where(REQUESTS.c.id == request_id, REQUESTS.c.status.in_(list(sources)))
            .values(
                status=target,
                status_reason=reason,
                status_notes=dict(notes) if notes else None,
                sealed_at=func.coalesce(REQUESTS.c.sealed_at, now),
                updated_at=now,
            )
        )
        return bool(result.rowcount == 1)

    def status_of(self, request_id: int) -> str | None:
        """The status as the database holds it now (not as a loaded row remembers it)."""
        return self.session.scalar(select(REQUESTS.c.status).where(REQUESTS.c.id == request_id))

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

    def set_held(self, reference: str, held: bool, now: datetime) -> bool | None:
        """Hold or release a request; None if there is none, else whether anything changed."""
        request = self.session.scalars(
            select(Request).where(Request.reference == reference).with_for_update()
        ).one_or_none()
        if request is None:
            return None
        if request.held == held:
            return False
        request.held = held
        return True


FINAL_STATUSES = (
    RequestStatus.ACCEPTED.value,
    RequestStatus.REJECTED.value,
    RequestStatus.SEALED.value,  # sealed and never acknowledged by the greffe
)
"""Statuses after which nothing more happens to a request: its age counts from then."""


@dataclass(frozen=True, slots=True)
class PurgeCandidate:
    """A request the retention purge would delete."""

    request_id: int
    reference: str
    court: str
    status: str
    final_at: datetime
    """When it reached its final status (its last change: `updated_at`)."""
    submissions: int


@dataclass(frozen=True, slots=True)
class PurgedRequest:
    """What one purge transaction deleted, and the blobs it marked for deletion."""

    reference: str
    court: str
    status: str
    final_at: datetime
    submissions: list[str]
    blob_keys: list[str]


def _purgeable(before: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Request.status.in_(FINAL_STATUSES),
        Request.held.is_(False),
        Request.updated_at < before,
    )


class PurgeRepository:
    """The retention purge's reads and deletes; `gateway.retention` says in which order."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def due(
        self, before: datetime, *, after_id: int = 0, limit: int | None = None
    ) -> list[PurgeCandidate]:
        """Requests in a final status since before `before`, not held, by id after `after_id`."""
        query = (
            select(
                Request.id, Request.reference, Court.code, Request.status, Request.updated_at,
                Request.submission_count,
            )
            .join(Court, Court.id == Request.court_id)
            .where(*_purgeable(before), Request.id > after_id)
            .order_by(Request.id)
            .limit(limit)
        )  # fmt: skip
        return [PurgeCandidate(*row) for row in self.session.execute(query).all()]

    def delete_request(
        self, request_id: int, before: datetime, now: datetime
    ) -> PurgedRequest | None:
        """Delete a request's rows and mark its blobs `purged_at`; None if it is no longer due.

        The request row is locked and its conditions read again, so a hold or a
        status change that committed since `due` wins.
        """
        request = self.session.scalars(
            select(Request).where(Request.id == request_id, *_purgeable(before)).with_for_update()
        ).one_or_none()
        if request is None:
            return None
        subs = self.session.execute(
            select(Submission.id, Submission.reference, Submission.raw_blob,
                   Submission.manifest_blob)
            .where(Submission.request_id == request_id)
            .order_by(Submission.number)
        ).all()  # fmt: skip
        sub_ids = [row.id for row in subs]
        keys = [key for row in subs for key in (row.raw_blob, row.manifest_blob)]
        documents = select(Document.blob).where(Document.submission_id.in_(sub_ids))
        keys += self.session.scalars(documents)
        keys += [request.manifest_blob] if request.manifest_blob else []
        references = [request.reference, *(row.reference for row in subs)]
        court = self.session.scalar(select(Court.code).where(Court.id == request.court_id))
        self._mark_blobs(keys, now)
        self._delete_rows(request_id, sub_ids, references)
        return PurgedRequest(
            request.reference, str(court), request.status, request.updated_at,
            [row.reference for row in subs], sorted(set(keys)),
        )  # fmt: skip

    def _mark_blobs(self, keys: list[str], now: datetime) -> None:
        self._run(update(Blob).where(Blob.key.in_(keys)).values(purged_at=now))

    def _delete_rows(self, request_id: int, sub_ids: list[int], references: list[str]) -> None:
        """Children first: no foreign key ever points at a deleted row."""
        self._run(
            update(ImapMessage)
            .where(ImapMessage.submission_id.in_(sub_ids))
            .values(submission_id=None)  # the IMAP state stays: the message was stripped
        )
        outbox = select(Outbox.id).where(Outbox.related_reference.in_(references))
        self._run(delete(OutboxAttempt).where(OutboxAttempt.outbox_id.in_(outbox)))
        self._run(delete(Outbox).where(Outbox.related_reference.in_(references)))
        self._run(delete(Document).where(Document.submission_id.in_(sub_ids)))
        self._run(delete(Submission).where(Submission.request_id == request_id))
        self._run(delete(Code).where(Code.request_id == request_id))
        self._run(delete(Request).where(Request.id == request_id))

    def marked_blobs(self, limit: int) -> list[str]:
        """Keys of blobs whose rows a purge deleted, still to be removed from the store."""
        return list(
            self.session.scalars(
                select(Blob.key).where(Blob.purged_at.is_not(None)).order_by(Blob.key).limit(limit)
            )
        )

    def forget_blobs(self, keys: Sequence[str]) -> None:
        """Delete the rows of marked blobs, once the blobs themselves are gone."""
        self._run(delete(Blob).where(Blob.key.in_(keys), Blob.purged_at.is_not(None)))

    def _run(self, statement: Update | Delete) -> None:
        self.session.execute(statement.execution_options(synchronize_session=False))


class CodeRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, code_id: int) -> Code | None:
        return self.session.get(Code, code_id)

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

    def close_for_request(self, request_id: int, now: datetime) -> None:
        """Close the request's code if it is still open (no message can join it after)."""
        self.session.connection().execute(
            update(CODES)
            .where(CODES.c.request_id == request_id, CODES.c.closed_at.is_(None))
            .values(closed_at=now)
        )

    def consume(self, code_id: int, now: datetime) -> bool:
        """Count one use, only if the code is still live: one conditional UPDATE."""
        used = writes_of(self.session).count(
            CONSUME_CODE, {"code_id": code_id, "now": now, "used_at": now}
        )
        return used == 1
