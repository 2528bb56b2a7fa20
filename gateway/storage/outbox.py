"""The outbox table: enqueue in the caller's transaction; claim due rows, lock them, record.

Also what an operator reads and does (`gateway outbox list | show | retry`):
each row with its last attempt, and a pending row made due now.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from gateway.storage.groupcommit import batch_of
from gateway.storage.models import Outbox, OutboxAttempt, table_of
from gateway.storage.notify import notify_outbox

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
KINDS = frozenset(
    {
        "code",
        "receipt",
        "state",
        "acknowledgement",
        "rejection",
        "registration",
        "registration_revoked",
        "check_report",
        "credential_expiry",
        "postmaster",
    }
)
OUTBOX = table_of(Outbox)
INSERT_OUTBOX = insert(OUTBOX).returning(OUTBOX.c.id)
INSERT_OUTBOX_ROWS = insert(OUTBOX)  # a batch's receipts, in one executemany


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
    row = _new_row(kind, recipient, now, message, values, related_reference)
    # Executed now, so a constraint error surfaces here, not at commit.
    row_id = session.connection().execute(INSERT_OUTBOX, row).scalar_one()
    notify_outbox(session)
    return int(row_id)


def enqueue_later(
    session: Session,
    *,
    kind: str,
    recipient: str,
    now: datetime,
    values: dict[str, str],
    related_reference: str | None = None,
) -> None:
    """As `enqueue`, for a caller that needs no id: in a group commit's batch the row is
    written with the batch's others just before its commit (`Batch.insert_later`) and the
    worker told once; outside a batch it is written at once."""
    batch = batch_of(session)
    if batch is None:
        enqueue(session, kind=kind, recipient=recipient, now=now, values=values,
                related_reference=related_reference)  # fmt: skip
        return
    row = _new_row(kind, recipient, now, None, values, related_reference)
    batch.insert_later(session, INSERT_OUTBOX_ROWS, [row])
    batch.before_commit("notify-outbox", functools.partial(notify_outbox, session))


def _new_row(
    kind: str,
    recipient: str,
    now: datetime,
    message: bytes | None,
    values: dict[str, str] | None,
    related_reference: str | None,
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r}")
    if (message is None) == (values is None):
        raise ValueError("give either a message or template values")
    return {
        "kind": kind,
        "recipient": " ".join(recipient.split()),
        "message": message,
        "template_values": values,
        "status": PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "related_reference": related_reference,
    }


def pending_count(session: Session) -> int:
    """How many messages wait for delivery (a metrics gauge)."""
    count = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == PENDING))
    return int(count or 0)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row as an operator sees it: no message bytes, no template values."""

    id: int
    kind: str
    recipient: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    related_reference: str | None
    last_result: str | None
    """The last attempt's result (sent, temporary, permanent), None before the first."""
    last_detail: str | None
    last_attempt_at: datetime | None


_LAST_ATTEMPT = (
    select(OutboxAttempt.outbox_id, func.max(OutboxAttempt.id).label("attempt_id"))
    .group_by(OutboxAttempt.outbox_id)
    .subquery()
)
_ENTRIES = (
    select(Outbox, OutboxAttempt)
    .outerjoin(_LAST_ATTEMPT, _LAST_ATTEMPT.c.outbox_id == Outbox.id)
    .outerjoin(OutboxAttempt, OutboxAttempt.id == _LAST_ATTEMPT.c.attempt_id)
)


def _entry(row: Outbox, last: OutboxAttempt | None) -> OutboxEntry:
    return OutboxEntry(
        id=row.id,
        kind=row.kind,
        recipient=row.recipient,
        status=row.status,
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
        related_reference=row.related_reference,
        last_result=last.result if last else None,
        last_detail=last.detail if last else None,
        last_attempt_at=last.attempted_at if last else None,
    )


def entries(session: Session, status: str | None = None) -> list[OutboxEntry]:
    """Every row (or those of one status) with its last attempt, oldest first."""
    query = _ENTRIES.order_by(Outbox.id)
    if status is not None:
        query = query.where(Outbox.status == status)
    return [_entry(row, last) for row, last in session.execute(query).all()]


def entries_about(session: Session, references: Sequence[str]) -> list[OutboxEntry]:
    """The rows sent about these references (a request's and its submissions'), oldest first."""
    if not references:
        return []
    query = _ENTRIES.where(Outbox.related_reference.in_(list(references))).order_by(Outbox.id)
    return [_entry(row, last) for row, last in session.execute(query).all()]


def entry(session: Session, outbox_id: int) -> OutboxEntry | None:
    """One row with its last attempt, or None."""
    found = session.execute(_ENTRIES.where(Outbox.id == outbox_id)).one_or_none()
    return _entry(*found) if found else None


def make_due(session: Session, outbox_id: int, now: datetime) -> bool:
    """Make a pending row due now (its back-off cut short); False if it is not pending.

    A row a worker holds right now keeps its lease: that attempt is recorded
    as usual, and its outcome (sent, or the next back-off) wins.
    """
    result = session.execute(
        update(Outbox)
        .where(Outbox.id == outbox_id, Outbox.status == PENDING)
        .values(next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class DueRow:
    """A row just claimed: what delivery needs of it."""

    id: int
    kind: str
    recipient: str
    message: bytes | None
    template_values: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class LeasedRow:
    """A row about to be recorded, locked: what deciding its outcome needs of it."""

    id: int
    kind: str
    status: str
    attempts: int
    created_at: datetime
    lease_until: datetime | None
    related_reference: str | None


# Core statements built once: the worker claims and records a batch per pass,
# and loading ORM objects cost more than the SQL itself.
_C = OUTBOX.c
_CLAIM = (
    update(OUTBOX)
    .where(
        _C.id.in_(
            select(_C.id)
            .where(
                _C.status == PENDING,
                _C.next_attempt_at <= bindparam("now"),
                or_(_C.lease_until.is_(None), _C.lease_until <= bindparam("now")),
            )
            .order_by(_C.next_attempt_at, _C.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        )
    )
    .values(lease_until=bindparam("lease_until"))
    .returning(_C.id, _C.kind, _C.recipient, _C.message, _C.template_values, _C.next_attempt_at)
)
_LOCK = (
    select(
        _C.id,
        _C.kind,
        _C.status,
        _C.attempts,
        _C.created_at,
        _C.lease_until,
        _C.related_reference,
    )
    .where(_C.id.in_(bindparam("ids", expanding=True)))
    .order_by(_C.id)
    .with_for_update()
)
_ATTEMPT = table_of(OutboxAttempt)
_ADD_ATTEMPTS = insert(_ATTEMPT)
_BY_ID = _C.id == bindparam("row_id")
# The values are bound parameters, never literals: None then goes through the JSON
# type (a JSON null), as it did when the ORM wrote these rows.
_SENT = (
    update(OUTBOX)
    .where(_BY_ID)
    .values(
        status=SENT,
        sent_at=bindparam("at"),
        message=bindparam("message"),
        template_values=bindparam("template_values"),
        attempts=bindparam("attempts"),
        lease_until=bindparam("lease_until"),
    )
)
_FAILED = (
    update(OUTBOX)
    .where(_BY_ID)
    .values(
        status=FAILED,
        message=bindparam("message"),
        template_values=bindparam("template_values"),
        attempts=bindparam("attempts"),
        lease_until=bindparam("lease_until"),
    )
)
_RETRY = (
    update(OUTBOX)
    .where(_BY_ID)
    .values(
        next_attempt_at=bindparam("next_attempt_at"),
        attempts=bindparam("attempts"),
        lease_until=bindparam("lease_until"),
    )
)


class OutboxRepository:
    """The delivery side: due rows claimed under a lease, then their attempts recorded."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[DueRow]:
        """Lease the pending rows due now whose lease (if any) ran out, oldest first.

        One statement: `FOR UPDATE SKIP LOCKED` on PostgreSQL lets two nodes
        claim different rows at once; SQLite's write lock serialises claims.
        """
        result = self.session.connection().execute(
            _CLAIM, {"now": now, "limit": limit, "lease_until": lease_until}
        )
        rows = sorted(result.all(), key=lambda row: (row[5], row[0]))
        return [DueRow(*row[:5]) for row in rows]

    def locked(self, ids: Sequence[int]) -> dict[int, LeasedRow]:
        """The rows with these ids, locked in id order (one order for every recorder)."""
        if not ids:
            return {}
        result = self.session.connection().execute(_LOCK, {"ids": list(ids)})
        return {row[0]: LeasedRow(*row) for row in result}

    def add_attempts(self, attempts: list[dict[str, object]]) -> None:
        """`outbox_id`, `attempted_at`, `result`, `detail` of each attempt."""
        if attempts:
            self.session.connection().execute(_ADD_ATTEMPTS, attempts)

    def mark_sent(self, rows: list[dict[str, object]]) -> None:
        """`row_id`, `at`, `attempts` of each row: delivered, its message and values cleared."""
        if rows:
            cleared = {"message": None, "template_values": None, "lease_until": None}
            self.session.connection().execute(_SENT, [{**row, **cleared} for row in rows])

    def mark_failed(self, rows: list[dict[str, object]]) -> None:
        """`row_id`, `attempts` of each row: given up, its message and values cleared."""
        if rows:
            cleared = {"message": None, "template_values": None, "lease_until": None}
            self.session.connection().execute(_FAILED, [{**row, **cleared} for row in rows])

    def mark_retry(self, rows: list[dict[str, object]]) -> None:
        """`row_id`, `attempts`, `next_attempt_at` of each row: pending again, unleased."""
        if rows:
            self.session.connection().execute(
                _RETRY, [{**row, "lease_until": None} for row in rows]
            )
