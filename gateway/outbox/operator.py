"""What an operator sees and does with the outbox: list rows, show a captured mail, retry now."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.errors import Conflict, NotFound
from gateway.ingest.manifest import rfc3339
from gateway.outbox.maildir import captured_files
from gateway.storage.audit import append_event, lock_head
from gateway.storage.db import Database
from gateway.storage.outbox import FAILED, PENDING, SENT, OutboxEntry, entries, entry, make_due

STATUSES = (PENDING, SENT, FAILED)


def describe(row: OutboxEntry) -> dict[str, Any]:
    """One row for `outbox list`: what it is, where it stands, what went wrong last."""
    failed_last = row.last_result is not None and row.last_result != "sent"
    return {
        "id": row.id,
        "kind": row.kind,
        "recipient": row.recipient,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_detail if failed_last else None,
        "next_retry": rfc3339(row.next_attempt_at) if row.status == PENDING else None,
        "created_at": rfc3339(row.created_at),
        "sent_at": rfc3339(row.sent_at) if row.sent_at else None,
        "reference": row.related_reference,
        "last_attempt": row.last_detail,
    }


def list_outbox(db: Database, status: str | None = None) -> list[dict[str, Any]]:
    """Every outgoing mail (or those of one status), oldest first."""
    with db.reading() as session:
        rows = entries(session, status)
    return [describe(row) for row in rows]


def captured_mail(db: Database, mail_dir: Path, outbox_id: int) -> bytes:
    """The mail captured for an outbox row, as kept in the maildir; or NotFound saying why not."""
    with db.reading() as session:
        row = entry(session, outbox_id)
    if row is None:
        raise NotFound(f"unknown outbox id {outbox_id}")
    files = captured_files(mail_dir, outbox_id)
    if files:
        return files[-1].read_bytes()  # sent again after a lost record: the last copy
    if row.status == PENDING:
        raise NotFound(f"outbox {outbox_id} is pending: nothing captured yet")
    if row.status == FAILED:
        raise NotFound(f"outbox {outbox_id} gave up ({row.last_detail}): nothing was captured")
    raise NotFound(
        f"outbox {outbox_id} was sent ({row.last_detail}), not captured: "
        f"a relayed mail is not kept, and {mail_dir} holds no copy"
    )


def retry_now(db: Database, outbox_id: int, now: datetime, actor: str) -> OutboxEntry:
    """Make a pending row due now, cutting its back-off short; audited.

    A sent row needs nothing, and a row that gave up has had its content
    cleared (it may have held a code): neither can be sent again.
    """
    with db.transaction() as session:
        lock_head(session)  # the audit head before any outbox row, as the worker locks them
        row = entry(session, outbox_id)
        if row is None:
            raise NotFound(f"unknown outbox id {outbox_id}")
        if row.status == SENT:
            raise Conflict(f"outbox {outbox_id} was already sent: nothing to retry")
        if row.status == FAILED:
            raise Conflict(
                f"outbox {outbox_id} gave up after {row.attempts} attempt(s) "
                f"({row.last_detail}); its content was cleared then: nothing to send again"
            )
        make_due(session, outbox_id, now)
        append_event(
            session,
            now,
            "outbox.retried",
            actor=actor,
            subject=row.related_reference or f"outbox/{outbox_id}",
            data={"outbox_id": outbox_id, "kind": row.kind, "attempts": row.attempts},
        )
    return row
