"""The outbox table's producer side: enqueue a message in the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from gateway.storage.models import Outbox, table_of

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
KINDS = frozenset({"code", "receipt", "state", "rejection", "registration"})
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
