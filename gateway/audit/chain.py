"""The hash-chained audit trail: append events and verify the chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.storage.models import AuditEvent, AuditHead, table_of

GENESIS = "0" * 64
HEAD, EVENTS = table_of(AuditHead), table_of(AuditEvent)
# Built once: append_event runs once per accepted message in the group commit's writer.
READ_HEAD = select(HEAD.c.seq, HEAD.c.sha256).where(HEAD.c.id == 1).with_for_update()
INSERT_EVENT = insert(EVENTS)
MOVE_HEAD = update(HEAD).where(HEAD.c.id == 1).values(seq=bindparam("seq"), sha256=bindparam("sha"))


def canonical_form(
    seq: int, at: datetime, action: str, actor: str, subject: str, data: dict[str, Any], prev: str
) -> bytes:
    """The bytes an event's SHA-256 is taken over (stable key order, no spaces)."""
    body = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "action": action,
        "actor": actor,
        "subject": subject,
        "data": data,
        "prev_sha256": prev,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def lock_head(session: Session) -> None:
    """Take the chain's head lock now, before any other row lock of the transaction.

    Every writer that appends takes this lock; taking it first fixes one lock
    order for transactions that also lock other rows (a group commit's batch).
    """
    session.execute(select(AuditHead.id).where(AuditHead.id == 1).with_for_update())


def append_event(
    session: Session,
    now: datetime,
    action: str,
    *,
    actor: str,
    subject: str = "",
    data: dict[str, Any] | None = None,
) -> int:
    """Append one event in the caller's transaction; return its sequence number.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite transactions
    already hold the write lock) so concurrent appends are serialised.  Core
    statements, not ORM objects: the group commit's writer appends one event
    per message.
    """
    conn = session.connection()
    head = conn.execute(READ_HEAD).one()
    payload = dict(data or {})
    seq, prev = int(head.seq) + 1, str(head.sha256)
    digest = hashlib.sha256(
        canonical_form(seq, now, action, actor, subject, payload, prev)
    ).hexdigest()
    conn.execute(
        INSERT_EVENT,
        {
            "seq": seq,
            "at": now,
            "action": action,
            "actor": actor,
            "subject": subject,
            "data": payload,
            "prev_sha256": prev,
            "sha256": digest,
        },
    )
    conn.execute(MOVE_HEAD, {"seq": seq, "sha": digest})
    return seq


@dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    broken_seq: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify_chain(session: Session, batch: int = 5000) -> ChainReport:
    """Walk the chain in order; name the first event whose hash or link is wrong."""
    prev, expected_seq, count, last_id = GENESIS, 1, 0, 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(batch)
        ).all()
        if not rows:
            break
        for event in rows:
            problem = _check_event(event, expected_seq, prev)
            if problem:
                return ChainReport(count, event.seq, problem)
            prev, expected_seq, count, last_id = event.sha256, expected_seq + 1, count + 1, event.id
        session.expunge_all()
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != count or head.sha256 != prev):
        return ChainReport(count, count + 1, "events missing at the end of the chain")
    return ChainReport(count, None, "")


def _check_event(event: AuditEvent, expected_seq: int, prev: str) -> str:
    if event.seq != expected_seq:
        return f"sequence gap: expected {expected_seq}, found {event.seq}"
    if event.prev_sha256 != prev:
        return "link to the previous event is broken"
    digest = hashlib.sha256(
        canonical_form(
            event.seq, event.at, event.action, event.actor, event.subject, event.data, prev
        )
    ).hexdigest()
    if digest != event.sha256:
        return "event content does not match its hash"
    return ""
