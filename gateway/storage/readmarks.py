"""Per-clerk state of a request: when each console user last opened it, and who it is assigned to.

Both rows go with their request when the retention purge deletes it
(``ON DELETE CASCADE``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.storage.models import ConsoleUser, ReadMark, RequestAssignment


class ReadMarkRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def mark(self, user_id: int, request_id: int, now: datetime) -> None:
        """Record that the user opened the request now (created or moved forward)."""
        row = self.session.get(ReadMark, (user_id, request_id), with_for_update=True)
        if row is None:
            try:
                with self.session.begin_nested():
                    self.session.add(ReadMark(user_id=user_id, request_id=request_id, read_at=now))
                return
            except IntegrityError:  # the same user in a second tab, at the same moment
                row = self.session.get(
                    ReadMark, (user_id, request_id), with_for_update=True, populate_existing=True
                )
                assert row is not None
        row.read_at = max(row.read_at, now)

    def read_at(self, user_id: int, request_id: int) -> datetime | None:
        row = self.session.get(ReadMark, (user_id, request_id))
        return row.read_at if row else None


class AssignmentRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def assign(self, request_id: int, user_id: int, now: datetime, by: str) -> int | None:
        """Assign the request to the user; returns whom it was assigned to before (or None)."""
        row = self.session.get(RequestAssignment, request_id, with_for_update=True)
        if row is None:
            try:
                with self.session.begin_nested():
                    self.session.add(
                        RequestAssignment(
                            request_id=request_id, user_id=user_id, assigned_at=now, assigned_by=by
                        )
                    )
                return None
            except IntegrityError:  # two clerks taking it at once: the later one wins
                row = self.session.get(
                    RequestAssignment, request_id, with_for_update=True, populate_existing=True
                )
                assert row is not None
        previous = row.user_id
        row.user_id, row.assigned_at, row.assigned_by = user_id, now, by
        return previous

    def of_request(self, request_id: int) -> tuple[int, str, datetime] | None:
        """(user id, their login, since when) of the request's assignee, or None."""
        row = self.session.execute(
            select(RequestAssignment.user_id, ConsoleUser.email, RequestAssignment.assigned_at)
            .join(ConsoleUser, ConsoleUser.id == RequestAssignment.user_id)
            .where(RequestAssignment.request_id == request_id)
        ).one_or_none()
        return None if row is None else (int(row[0]), str(row[1]), row[2])
