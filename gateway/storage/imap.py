"""The IMAP puller's durable state: folder cursors, per-message states and their look-ups.

Each method is one short transaction of its own, so a state written is a
state committed: the crash-safety argument in `puller.py` rests on that.
`commit` writes the states of several messages in one transaction (one
fsync for all of them), through the gateway's group-commit writer when it
is given one.  The lookups only read: on SQLite they never queue for the
write lock that the pipeline's commits hold meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Insert, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from gateway.model import Clock
from gateway.storage.audit import append_event
from gateway.storage.db import Database, writes_of
from gateway.storage.models import ImapCursor, ImapMessage, table_of
from gateway.storage.submissions import SubmissionRepository

FETCHED, STORED, STRIPPED, QUARANTINED = "fetched", "stored", "stripped", "quarantined"
IMAP_MESSAGES = table_of(ImapMessage)
PENDING = (FETCHED, STORED)
T = TypeVar("T")


class Writer(Protocol):
    """A group-commit writer (`gateway.storage.groupcommit.GroupCommitter`).

    `run(work)` runs `work(session, batch)` in the writer's next transaction
    and returns once that transaction is committed (raising what `work`
    raised, or the commit's error); `core_only` as the writer takes it.
    """

    def run(self, work: Callable[[Session, Any], T], *, core_only: bool = False) -> T: ...


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
class StateChange:
    """One message's new state, and the audit event of that transition if it has one."""

    key: MessageKey
    state: str
    raw_sha256: str
    reference: str | None = None
    """The submission the message was stored as: its id is recorded on the row."""
    event: AuditLine | None = None


@dataclass(frozen=True, slots=True)
class MessageState:
    state: str
    raw_sha256: str
    submission_id: int | None


class ImapState:
    """Repository for imap_cursor and imap_message, plus the submission lookups of a pass.

    With a `writer`, message states commit in the writer's batches, beside the
    pipeline's own commits: one queue for the database's write lock instead
    of two threads taking turns at it (on SQLite, a waiter polls the lock with
    sleeps of up to 100 ms while the writer takes it again and again).
    """

    def __init__(self, db: Database, clock: Clock, writer: Writer | None = None) -> None:
        self.db = db
        self.clock = clock
        self.writer = writer

    # -- cursors ---------------------------------------------------------------
    def cursor(self, mailbox: str, folder: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID handled) for the folder, or None on first sight."""
        with self.db.reading() as session:
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
        with self.db.reading() as session:
            row = session.get(ImapMessage, _pk(key))
            return (
                None if row is None else MessageState(row.state, row.raw_sha256, row.submission_id)
            )

    def commit(self, changes: Sequence[StateChange]) -> None:
        """Record messages' states (fetched -> stored -> stripped, or quarantined) at once.

        One transaction for all of them: every change is durable or none is, so
        a caller that acts on the server only once `commit` has returned never
        acts on a state that a crash could take back.  Each change's audit
        event commits with it: the trail never says "stripped" about a message
        whose state says otherwise.
        """
        if not changes:
            return
        if self.writer is not None:
            # Core statements only: on SQLite its savepoint is the driver's.
            self.writer.run(lambda session, _batch: self._write(session, changes), core_only=True)
            return
        with self.db.transaction() as session:
            self._write(session, changes)

    def _write(self, session: Session, changes: Sequence[StateChange]) -> None:
        ids = SubmissionRepository(session).ids_of(c.reference for c in changes if c.reference)
        now = self.clock()
        rows: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        for change in changes:
            if change.event is not None:
                append_event(
                    session,
                    now,
                    change.event.action,
                    actor=change.event.actor,
                    subject=change.event.subject,
                    data=change.event.data,
                )
            submission_id = ids.get(change.reference) if change.reference else None
            rows[_pk(change.key)] = _row(change, submission_id, now)
        _upsert(session, list(rows.values()))

    def pending_uids(self, mailbox: str, folder: str, uidvalidity: int) -> list[int]:
        """UIDs left half-done (fetched or stored) by an earlier pass: retried first."""
        with self.db.reading() as session:
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

    def stored_references(
        self, mailbox: str, folder: str, uidvalidity: int, digests: Mapping[int, str]
    ) -> dict[int, list[str]]:
        """The references of the UIDs (-> raw SHA-256) that an earlier pass stored, not stripped.

        A UID is found by its own state row ('stored', after a crash), else by
        the same bytes pulled under another UID or UIDVALIDITY of the mailbox.
        A UID missing from the answer was never stored; [] means accepted
        without a submission (codes@, etat@).  One read for the whole group.
        """
        if not digests:
            return {}
        with self.db.reading() as session:
            found = _own_stored(session, mailbox, folder, uidvalidity, digests)
            rest = {uid: digest for uid, digest in digests.items() if uid not in found}
            if rest:
                elsewhere = _stored_elsewhere(session, mailbox, set(rest.values()))
                found.update({uid: elsewhere[d] for uid, d in rest.items() if d in elsewhere})
            references = SubmissionRepository(session).references_of(
                sid for sid in found.values() if sid is not None
            )
        return {
            uid: [references[sid]] if sid is not None and sid in references else []
            for uid, sid in found.items()
        }

    # -- documents ---------------------------------------------------------------
    def holders(self, sha256s: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
        """For each SHA-256, the (submission id, reference) pairs holding that document."""
        wanted = sorted(set(sha256s))
        found: dict[str, list[tuple[int, str]]] = {digest: [] for digest in wanted}
        if not wanted:
            return found
        with self.db.reading() as session:
            for digest, submission_id, reference in SubmissionRepository(session).holders(wanted):
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


def _row(change: StateChange, submission_id: int | None, now: datetime) -> dict[str, Any]:
    key = change.key
    return {
        "mailbox": key.mailbox,
        "folder": key.folder,
        "uidvalidity": key.uidvalidity,
        "uid": key.uid,
        "state": change.state,
        "raw_sha256": change.raw_sha256,
        "submission_id": submission_id,
        "updated_at": now,
    }


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or update the rows in one statement (no ORM load per row: this runs per message)."""
    if rows:
        writes_of(session).many(_upsert_statement(session.get_bind().dialect.name), rows)


@functools.cache
def _upsert_statement(dialect: str) -> Insert:
    """INSERT .. ON CONFLICT DO UPDATE for imap_message (SQLite or PostgreSQL), built once.

    A row's submission id, once recorded, is kept when a later state has none.
    """
    statement = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(IMAP_MESSAGES)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["mailbox", "folder", "uidvalidity", "uid"],
        set_={
            "state": excluded.state,
            "raw_sha256": excluded.raw_sha256,
            "updated_at": excluded.updated_at,
            "submission_id": func.coalesce(
                excluded.submission_id, IMAP_MESSAGES.c.submission_id
            ),
        },
    )


def _own_stored(
    session: Session, mailbox: str, folder: str, uidvalidity: int, digests: Mapping[int, str]
) -> dict[int, int | None]:
    """UID -> submission id of the UIDs whose own row says 'stored' with these very bytes."""
    rows = session.execute(
        select(ImapMessage.uid, ImapMessage.raw_sha256, ImapMessage.submission_id).where(
            ImapMessage.mailbox == mailbox,
            ImapMessage.folder == folder,
            ImapMessage.uidvalidity == uidvalidity,
            ImapMessage.uid.in_(list(digests)),
            ImapMessage.state == STORED,
        )
    )
    return {uid: submission_id for uid, raw, submission_id in rows if digests[uid] == raw}


def _stored_elsewhere(session: Session, mailbox: str, digests: set[str]) -> dict[str, int | None]:
    """Raw SHA-256 -> the submission stored for those bytes under any UID of the mailbox."""
    rows = session.execute(
        select(ImapMessage.raw_sha256, ImapMessage.submission_id).where(
            ImapMessage.mailbox == mailbox,
            ImapMessage.raw_sha256.in_(digests),
            ImapMessage.submission_id.is_not(None),
        )
    )
    return {digest: submission_id for digest, submission_id in rows}


def unstripped_before(session: Session, before: datetime) -> list[tuple[str, str, int]]:
    """(mailbox, folder, UID) of messages stored but still not stripped at `before`."""
    rows = session.execute(
        select(ImapMessage.mailbox, ImapMessage.folder, ImapMessage.uid).where(
            ImapMessage.state == STORED, ImapMessage.updated_at < before
        )
    ).all()
    return [(mailbox, folder, int(uid)) for mailbox, folder, uid in rows]
