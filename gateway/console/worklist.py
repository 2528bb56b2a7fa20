"""The clerk's side of a request: the queue, read marks, assignment and a request's history.

Every read and change takes the viewer's scope (their courts; None for an
administrator): a request of another court is `NotFound`, exactly like one
that does not exist.  A request is *unread* for a clerk who never opened
it, or who opened it before its last change (a new filing, another clerk's
action).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.errors import InputError, NotFound
from gateway.model import Clock
from gateway.storage.audit import AuditRepository, append_event
from gateway.storage.db import Database, Session
from gateway.storage.outbox import entries_about
from gateway.storage.queue import QueueFilter, QueueRepository, QueueRow, submission_references
from gateway.storage.readmarks import AssignmentRepository, ReadMarkRepository
from gateway.storage.requests import RequestRepository
from gateway.storage.users import UserRepository

Scope = Collection[str] | None
PAGE_SIZE = 25


@dataclass(frozen=True, slots=True)
class QueuePage:
    rows: list[QueueRow]
    total: int
    page: int
    pages: int


@dataclass(frozen=True, slots=True)
class HistoryLine:
    at: datetime
    what: str
    """An audit action (`request.rejected`) or `mail:<outbox kind>`."""
    who: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Assignee:
    user_id: int
    email: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Desk:
    """A request as the clerk's page shows it, besides what `Records.request` says."""

    request_id: int
    court: str
    assignee: Assignee | None
    history: list[HistoryLine]
    mails: list[dict[str, Any]]
    names: dict[str, str]
    """`user:<id>` -> login, for the people the history names."""


class Worklist:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def queue(self, wanted: QueueFilter, viewer_id: int, page: int) -> QueuePage:
        page = max(page, 1)
        with self.db.reading() as session:
            rows, total = QueueRepository(session).page(
                wanted, viewer_id, (page - 1) * PAGE_SIZE, PAGE_SIZE
            )
        return QueuePage(rows, total, page, max(1, -(-total // PAGE_SIZE)))

    def open(self, reference: str, scope: Scope, viewer_id: int) -> Desk:
        """The request's desk, and the viewer's read mark moved to now."""
        now = self.clock()
        with self.db.transaction() as session:
            request_id, court = _scoped(session, reference, scope)
            ReadMarkRepository(session).mark(viewer_id, request_id, now)
            return self._desk(session, request_id, court, reference)

    def _desk(self, session: Session, request_id: int, court: str, reference: str) -> Desk:
        found = AssignmentRepository(session).of_request(request_id)
        assignee = Assignee(*found) if found else None
        subjects = [reference.strip().upper(), *submission_references(session, request_id)]
        events = AuditRepository(session).about(subjects)
        named = [event.actor for event in events]
        named += [str(event.data.get("assignee")) for event in events if event.data.get("assignee")]
        names = _user_names(session, named)
        history = [
            HistoryLine(event.at, event.action, names.get(event.actor, event.actor),
                        dict(event.data))
            for event in events
        ]  # fmt: skip
        mails = [
            {
                "kind": row.kind, "recipient": row.recipient, "status": row.status,
                "attempts": row.attempts, "created_at": row.created_at, "sent_at": row.sent_at,
                "reference": row.related_reference,
            }
            for row in entries_about(session, subjects)
        ]  # fmt: skip
        return Desk(request_id, court, assignee, history, mails, names)

    def assign(
        self, reference: str, scope: Scope, assignee_id: int, allowed: Collection[int], actor: str
    ) -> None:
        """Assign the request to `assignee_id`, one of `allowed` (the court's clerks)."""
        if assignee_id not in allowed:
            raise InputError("this person is not a clerk of the request's court")
        now = self.clock()
        with self.db.transaction() as session:
            request_id, _court = _scoped(session, reference, scope)
            previous = AssignmentRepository(session).assign(request_id, assignee_id, now, actor)
            append_event(
                session, now, "request.assigned", actor=actor, subject=reference.strip().upper(),
                data={"assignee": f"user:{assignee_id}",
                      "previous": f"user:{previous}" if previous else None},
            )  # fmt: skip

    def court_of(self, reference: str, scope: Scope) -> str:
        with self.db.reading() as session:
            return _scoped(session, reference, scope)[1]


def _scoped(session: Session, reference: str, scope: Scope) -> tuple[int, str]:
    found = RequestRepository(session).scoped(reference.strip().upper(), scope)
    if found is None:
        raise NotFound(f"unknown request {' '.join(reference.split())[:60]}")
    return found[0].id, found[1]


def _user_names(session: Session, actors: list[str]) -> dict[str, str]:
    """`user:<id>` actors named by their login."""
    ids = sorted({int(actor[5:]) for actor in actors if actor.startswith("user:")
                  and actor[5:].isdigit()})  # fmt: skip
    return {f"user:{uid}": email for uid, email in UserRepository(session).emails(ids).items()}
