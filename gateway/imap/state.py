"""The puller's durable state: folder cursors, per-message states and the lookups they need.

Each method is one short transaction of its own, so a state written is a
state committed: the crash-safety argument in `puller.py` rests on that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gateway.audit.chain import append_event
from gateway.model import Clock
from gateway.storage.db import Database
from gateway.storage.models import Document, ImapCursor, ImapMessage, Submission

FETCHED, STORED, STRIPPED, QUARANTINED = "fetched", "stored", "stripped", "quarantined"
PENDING = (FETCHED, STORED)


@dataclass(frozen=True, slots=True)
class MessageKey:
    """Where a message is: (mailbox, folder, UIDVALIDITY, UID)."""

    mailbox: str
    folder: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class AuditLine:
    """An audit event to append with a state change."""

    action: str
    actor: str
    subject: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageState:
    state: str
    raw_sha256: str
    submission_id: int | None


class ImapState:
    """Repository for imap_cursor and imap_message, plus the submission lookups of a pass."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    # -- cursors ---------------------------------------------------------------
    def cursor(self, mailbox: str, folder: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handled) for the folder, or None on first sight."""
        with self.db.transaction() as session:
            row = session.get(ImapCursor, (mailbox, folder))
            return None if row is None else (row.uidvalidity, row.last_uid)

    def set_cursor(self, mailbox: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        with self.db.transaction() as session:
            row = session.get(ImapCursor, (mailbox, folder))
            if row is None:
                row = ImapCursor(mailbox=mailbox, folder=folder, uidvalidity=uidvalidity)
                session.add(row)
            row.uidvalidity, row.last_uid, row.updated_at = uidvalidity, last_uid, self.clock()

    # -- messages --------------------------------------------------------------
    def message(self, key: MessageKey) -> MessageState | None:
        with self.db.transaction() as session:
            row = session.get(ImapMessage, _pk(key))
            return (
                None if row is None else MessageState(row.state, row.raw_sha256, row.submission_id)
            )

    def mark(
        self,
        key: MessageKey,
        state: str,
        raw_sha256: str,
        submission_id: int | None = None,
        event: AuditLine | None = None,
    ) -> None:
        """Record the message's state (fetched -> stored -> stripped, or quarantined).

        The audit event of the transition, if any, commits with it: the trail
        never says "stripped" about a message whose state says otherwise.
        """
        with self.db.transaction() as session:
            if event is not None:
                append_event(
                    session,
                    self.clock(),
                    event.action,
                    actor=event.actor,
                    subject=event.subject,
                    data=event.data,
                )
            row = session.get(ImapMessage, _pk(key))
            if row is None:
                row = ImapMessage(
                    mailbox=key.mailbox, folder=key.folder, uidvalidity=key.uidvalidity, uid=key.uid
                )
                session.add(row)
            row.state, row.raw_sha256, row.updated_at = state, raw_sha256, self.clock()
            if submission_id is not None:
                row.submission_id = submission_id

    def pending_uids(self, mailbox: str, folder: str, uidvalidity: int) -> list[int]:
        """UIDs left half-done (fetched or stored) by an earlier pass: retried first."""
        with self.db.transaction() as session:
            return list(
                session.scalars(
                    select(ImapMessage.uid).where(
                        ImapMessage.mailbox == mailbox,
                        ImapMessage.folder == folder,
                        ImapMessage.uidvalidity == uidvalidity,
                        ImapMessage.state.in_(PENDING),
                    )
                )
            )

    def stored_references(self, key: MessageKey, raw_sha256: str) -> list[str] | None:
        """References of a message an earlier pass stored but did not strip; None if not stored.

        Found by its own state row ('stored', after a crash), else by the same
        bytes pulled under another UID or UIDVALIDITY of the mailbox.
        """
        with self.db.transaction() as session:
            row = session.get(ImapMessage, _pk(key))
            if row is not None and row.state == STORED and row.raw_sha256 == raw_sha256:
                submission_id = row.submission_id
            else:
                submission_id = session.scalar(
                    select(ImapMessage.submission_id)
                    .where(
                        ImapMessage.mailbox == key.mailbox,
                        ImapMessage.raw_sha256 == raw_sha256,
                        ImapMessage.submission_id.is_not(None),
                    )
                    .limit(1)
                )
                if submission_id is None:
                    return None
            if submission_id is None:  # accepted without a submission (codes@, etat@)
                return []
            reference = session.scalar(
                select(Submission.reference).where(Submission.id == submission_id)
            )
            return [reference] if reference else []

    # -- submissions and documents ---------------------------------------------
    def submission_id(self, reference: str) -> int | None:
        with self.db.transaction() as session:
            return session.scalar(select(Submission.id).where(Submission.reference == reference))

    def holders(self, sha256s: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
        """For each SHA-256, the (submission id, reference) pairs holding that document."""
        wanted = sorted(set(sha256s))
        found: dict[str, list[tuple[int, str]]] = {digest: [] for digest in wanted}
        if not wanted:
            return found
        with self.db.transaction() as session:
            rows = session.execute(
                select(Document.sha256, Submission.id, Submission.reference)
                .join(Submission, Submission.id == Document.submission_id)
                .where(Document.sha256.in_(wanted))
                .order_by(Submission.id)
            )
            for digest, submission_id, reference in rows:
                found[digest].append((submission_id, reference))
        return found


def held_by(holders: dict[str, list[tuple[int, str]]], digests: Sequence[str]) -> list[str]:
    """References holding every digest between them, oldest first; [] if one is missing."""
    references: list[str] = []
    for digest in digests:
        pairs = holders.get(digest) or []
        if not pairs:
            return []
        reference = pairs[0][1]
        if reference not in references:
            references.append(reference)
    return references


def _pk(key: MessageKey) -> tuple[str, str, int, int]:
    return (key.mailbox, key.folder, key.uidvalidity, key.uid)
