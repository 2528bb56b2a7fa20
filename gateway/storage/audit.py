"""The audit trail's rows: append an event in the caller's transaction, read the chain, checks.

The hash itself (what an event's SHA-256 is taken over) belongs to
`gateway.audit.chain`; this module only stores and reads.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.audit.chain import canonical_form
from gateway.storage.db import writes_of
from gateway.storage.groupcommit import batch_of
from gateway.storage.models import AuditEvent, AuditHead, CheckReport, table_of

HEAD, EVENTS = table_of(AuditHead), table_of(AuditEvent)
# Built once: append_event runs once per accepted message in the group commit's writer.
READ_HEAD = select(HEAD.c.seq, HEAD.c.sha256).where(HEAD.c.id == 1).with_for_update()
LOCK_HEAD = select(HEAD.c.id).where(HEAD.c.id == 1).with_for_update()
INSERT_EVENT = insert(EVENTS)
MOVE_HEAD = update(HEAD).where(HEAD.c.id == 1).values(seq=bindparam("seq"), sha256=bindparam("sha"))


def lock_head(session: Session) -> None:
    """Take the chain's head lock now, before any other row lock of the transaction.

    Every writer that appends takes this lock; taking it first fixes one lock
    order for transactions that also lock other rows (a group commit's batch).
    On SQLite the transaction's BEGIN IMMEDIATE, sent now, holds the whole
    database's write lock: there is no row lock to take.
    """
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        connection.execute(LOCK_HEAD)


def append_event(
    session: Session,
    now: datetime,
    action: str,
    *,
    actor: str,
    subject: str = "",
    data: dict[str, Any] | None = None,
) -> None:
    """Append one event in the caller's transaction.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite transactions
    already hold the write lock) so concurrent appends are serialised.  Core
    statements, not ORM objects.  In a group commit's batch the event is
    staged (`Batch.stage`): the batch's events are chained and written
    together just before its commit (the head read and moved once, the
    events in one `executemany`), in the order their units ran, and a unit
    rolled back takes its events with it.
    """
    event = (now, action, actor, subject, dict(data or {}))
    batch = batch_of(session)
    if batch is None:
        _write_events(session, [event])
    else:
        batch.stage(_STAGED_EVENTS, [event], functools.partial(_write_events, session))


_STAGED_EVENTS = "audit-events"
_Event = tuple[datetime, str, str, str, dict[str, Any]]


def _write_events(session: Session, events: list[_Event]) -> None:
    """Chain `events` after the head, insert them, and move the head past the last one."""
    writes = writes_of(session)
    head = writes.first(READ_HEAD, {})
    if head is None:
        raise RuntimeError("the audit head row is missing (the first migration makes it)")
    seq, prev = int(head[0]), str(head[1])
    rows = []
    for now, action, actor, subject, payload in events:
        seq += 1
        digest = hashlib.sha256(
            canonical_form(seq, now, action, actor, subject, payload, prev)
        ).hexdigest()
        rows.append({"seq": seq, "at": now, "action": action, "actor": actor,
                     "subject": subject, "data": payload, "prev_sha256": prev,
                     "sha256": digest})  # fmt: skip
        prev = digest
    writes.many(INSERT_EVENT, rows)
    writes.count(MOVE_HEAD, {"seq": seq, "sha": prev})


class AuditRepository:
    """Reading the chain (to verify or list it) and recording check reports."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def events_after(self, last_id: int, limit: int) -> Sequence[AuditEvent]:
        """Events in insertion order after row id `last_id` (a page of the walk)."""
        return self.session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(limit)
        ).all()

    def page(self, after_seq: int, limit: int, action: str | None = None) -> Sequence[AuditEvent]:
        """Events with a sequence number above `after_seq`, in chain order (a listing's page)."""
        query = select(AuditEvent).where(AuditEvent.seq > after_seq)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        return self.session.scalars(query.order_by(AuditEvent.seq).limit(limit)).all()

    def about(self, subjects: Sequence[str], limit: int = 500) -> Sequence[AuditEvent]:
        """Events whose subject is one of `subjects`, in chain order (a request's history)."""
        if not subjects:
            return []
        query = select(AuditEvent).where(AuditEvent.subject.in_(list(subjects)))
        return self.session.scalars(query.order_by(AuditEvent.seq).limit(limit)).all()

    def head(self) -> AuditHead | None:
        return self.session.get(AuditHead, 1)

    def forget_loaded(self) -> None:
        """Drop the events read so far from the session (a long walk stays small)."""
        self.session.expunge_all()

    def last_check(self) -> tuple[datetime, int] | None:
        """When the latest check report was recorded, and how many problems it found."""
        row = self.session.scalars(
            select(CheckReport).order_by(CheckReport.id.desc()).limit(1)
        ).one_or_none()
        if row is None:
            return None
        count = row.report.get("problem_count")
        return row.finished_at, int(count) if count is not None else len(row.report["problems"])

    def record_check(self, started_at: datetime, ok: bool, report: dict[str, Any]) -> None:
        self.session.add(
            CheckReport(started_at=started_at, finished_at=started_at, ok=ok, report=report)
        )
