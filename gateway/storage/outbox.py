"""The outbox table: enqueue in the caller's transaction; claim due rows, lock them, record."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, insert, or_, select
from sqlalchemy.orm import Session

from gateway.storage.models import Outbox, OutboxAttempt, table_of

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
KINDS = frozenset({"code", "receipt", "state", "rejection", "registration", "postmaster"})
OUTBOX = table_of(Outbox)
INSERT_OUTBOX = insert(OUTBOX).returning(OUTBOX.c.id)


def enqueue(
    session: Session,
    *,
    kind: str,
    recipient: str,
    now: datetime,
    message: bytes | None = None,
    values: dict[str, str] | None = None,
    related_reference: str | None = None,
) -> int:
    """Add a pending row, due now, and return its id; it commits (or not) with its cause.

    Give either the composed `message`, or the template `values` for the worker
    to compose and sign at delivery (which keeps that work off the accept path).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r}")
    if (message is None) == (values is None):
        raise ValueError("give either a message or template values")
    # A Core statement built once (the group commit's writer queues one receipt per
    # message); executed now, so a constraint error surfaces here, not at commit.
    row_id = (
        session.connection()
        .execute(
            INSERT_OUTBOX,
            {
                "kind": kind,
                "recipient": " ".join(recipient.split()),
                "message": message,
                "template_values": values,
                "status": PENDING,
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
                "related_reference": related_reference,
            },
        )
        .scalar_one()
    )
    return int(row_id)


def pending_count(session: Session) -> int:
    """How many messages wait for delivery (a metrics gauge)."""
    count = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == PENDING))
    return int(count or 0)


class OutboxRepository:
    """The delivery side: due rows claimed under a lease, then their attempts recorded."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def due(self, now: datetime, limit: int) -> Sequence[Outbox]:
        """Pending rows due now whose lease (if any) ran out, oldest first, locked.

        `FOR UPDATE SKIP LOCKED` on PostgreSQL lets two nodes claim different
        rows at once; SQLite's write lock serialises claims.
        """
        return self.session.scalars(
            select(Outbox)
            .where(
                Outbox.status == PENDING,
                Outbox.next_attempt_at <= now,
                or_(Outbox.lease_until.is_(None), Outbox.lease_until <= now),
            )
            .order_by(Outbox.next_attempt_at, Outbox.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()

    def locked(self, ids: Sequence[int]) -> dict[int, Outbox]:
        """The rows with these ids, locked in id order (one order for every recorder)."""
        rows = self.session.scalars(
            select(Outbox).where(Outbox.id.in_(ids)).order_by(Outbox.id).with_for_update()
        ).all()
        return {row.id: row for row in rows}

    def add_attempt(self, outbox_id: int, at: datetime, result: str, detail: str) -> None:
        self.session.add(
            OutboxAttempt(outbox_id=outbox_id, attempted_at=at, result=result, detail=detail)
        )
