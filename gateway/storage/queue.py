"""The clerks' queue: requests with their counts, assignee and the viewer's read mark, paged.

Only requests that hold at least one submission are listed (a code asked
for and never used leaves nothing for the greffe to review).  The newest
filing comes first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from gateway.storage.models import (
    ConsoleUser,
    Court,
    Document,
    ReadMark,
    Registration,
    Request,
    RequestAssignment,
    Submission,
)


@dataclass(frozen=True, slots=True)
class QueueFilter:
    courts: Collection[str] | None
    """The viewer's scope: only these courts (None: every court)."""
    status: str | None = None
    kind: str | None = None
    received_from: datetime | None = None
    """The last filing arrived at or after this time."""
    received_before: datetime | None = None
    assigned_to: int | None = None
    """Only the requests assigned to this user id."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    request_id: int
    reference: str
    court: str
    measure: str
    kind: str
    status: str
    submissions: int
    documents: int
    last_received_at: datetime
    updated_at: datetime
    assignee_id: int | None
    assignee_email: str | None
    read_at: datetime | None
    """When the viewer last opened it (None: never)."""


def _filings() -> Any:
    """Per request: how many documents, and when its last submission arrived."""
    return (
        select(
            Submission.request_id.label("request_id"),
            func.count(Document.id).label("documents"),
            func.max(Submission.received_at).label("last_received_at"),
        )
        .outerjoin(Document, Document.submission_id == Submission.id)
        .group_by(Submission.request_id)
        .subquery()
    )


class QueueRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def page(
        self, wanted: QueueFilter, viewer_id: int, offset: int, limit: int
    ) -> tuple[list[QueueRow], int]:
        """The rows of one page, and how many rows the filter keeps in all."""
        filings = _filings()
        base = _where(_joined(select(Request.id), filings), wanted, filings)
        total = int(self.session.scalar(select(func.count()).select_from(base.subquery())) or 0)
        columns = _joined(
            select(
                Request, Court.code, Registration.measure, filings.c.documents,
                filings.c.last_received_at, RequestAssignment.user_id, ConsoleUser.email,
                ReadMark.read_at,
            ),
            filings,
        )  # fmt: skip
        query = (
            columns.join(Registration, Registration.id == Request.registration_id)
            .outerjoin(ConsoleUser, ConsoleUser.id == RequestAssignment.user_id)
            .outerjoin(
                ReadMark, and_(ReadMark.request_id == Request.id, ReadMark.user_id == viewer_id)
            )
        )
        query = _where(query, wanted, filings).order_by(
            filings.c.last_received_at.desc(), Request.id.desc()
        )
        rows = self.session.execute(query.offset(offset).limit(limit)).all()
        return [_row(*row) for row in rows], total


def _joined(query: Select[Any], filings: Any) -> Select[Any]:
    """Each request with its filings' counts, its court and its assignment (if any)."""
    return (
        query.join(filings, filings.c.request_id == Request.id)
        .join(Court, Court.id == Request.court_id)
        .outerjoin(RequestAssignment, RequestAssignment.request_id == Request.id)
    )


def _where(query: Select[Any], wanted: QueueFilter, filings: Any) -> Select[Any]:
    if wanted.courts is not None:
        query = query.where(Court.code.in_(list(wanted.courts)))
    if wanted.status:
        query = query.where(Request.status == wanted.status)
    if wanted.kind:
        query = query.where(Request.kind == wanted.kind)
    if wanted.received_from is not None:
        query = query.where(filings.c.last_received_at >= wanted.received_from)
    if wanted.received_before is not None:
        query = query.where(filings.c.last_received_at < wanted.received_before)
    if wanted.assigned_to is not None:
        query = query.where(RequestAssignment.user_id == wanted.assigned_to)
    return query


def _row(
    request: Request, court: str, measure: str, documents: int, last_received_at: datetime,
    assignee_id: int | None, assignee_email: str | None, read_at: datetime | None,
) -> QueueRow:  # fmt: skip
    return QueueRow(
        request_id=request.id, reference=request.reference, court=court, measure=measure,
        kind=request.kind, status=request.status, submissions=request.submission_count,
        documents=int(documents or 0), last_received_at=last_received_at,
        updated_at=request.updated_at, assignee_id=assignee_id, assignee_email=assignee_email,
        read_at=read_at,
    )  # fmt: skip


def submission_references(session: Session, request_id: int) -> Sequence[str]:
    """The references of a request's submissions, in order (for its history)."""
    return session.scalars(
        select(Submission.reference)
        .where(Submission.request_id == request_id)
        .order_by(Submission.number)
    ).all()
