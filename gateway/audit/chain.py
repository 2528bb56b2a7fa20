"""The hash-chained audit trail: what an event's hash covers, and verifying the chain."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.storage.audit import AuditRepository
    from gateway.storage.models import AuditEvent

GENESIS = "0" * 64


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


@dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    broken_seq: int | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify_chain(events: AuditRepository, batch: int = 5000) -> ChainReport:
    """Walk the chain in order; name the first event whose hash or link is wrong."""
    prev, expected_seq, count, last_id = GENESIS, 1, 0, 0
    while True:
        rows = events.events_after(last_id, batch)
        if not rows:
            break
        for event in rows:
            problem = _check_event(event, expected_seq, prev)
            if problem:
                return ChainReport(count, event.seq, problem)
            prev, expected_seq, count, last_id = event.sha256, expected_seq + 1, count + 1, event.id
        events.forget_loaded()
    head = events.head()
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
