"""Submissions, their documents and the blob rows: the accept path's writes and every read.

The writes run in the group commit's single writer thread, once per
accepted message: they are Core statements built once (a few round trips,
no unit-of-work flushes), the blob and document rows written for the whole
batch at once, so their cost bounds how many messages per second one writer
commits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.errors import AlreadyStored
from gateway.storage.db import Reads, writes_of
from gateway.storage.groupcommit import batch_of
from gateway.storage.models import Blob, Court, Document, Request, Submission, table_of

SUBMISSIONS = table_of(Submission)
INSERT_BLOBS = insert(table_of(Blob))
INSERT_SUBMISSION = insert(SUBMISSIONS).returning(SUBMISSIONS.c.id)
INSERT_DOCUMENTS = insert(table_of(Document))
DUPLICATE = select(SUBMISSIONS.c.reference).where(
    SUBMISSIONS.c.message_id_sha256 == bindparam("mid"),
    SUBMISSIONS.c.raw_sha256 == bindparam("raw"),
)


def duplicate_of(reads: Reads, message_id_sha256: str, raw_sha256: str) -> str | None:
    """The reference already stored for these bytes under this Message-ID, if any."""
    found = reads.first(DUPLICATE, {"mid": message_id_sha256, "raw": raw_sha256})
    return None if found is None else str(found[0])


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob written to the store, as its row records it."""

    key: str
    kind: str
    sha256: str
    """SHA-256 of the stored (encrypted) bytes."""
    size: int


@dataclass(frozen=True, slots=True)
class DocumentRow:
    index: int
    detected_type: str
    size: int
    sha256: str
    blob: str
    warnings: tuple[str, ...] = ()
    """Active content found in the document (javascript, launch-action …): machine words."""


@dataclass(frozen=True, slots=True)
class NewSubmission:
    """Everything the submission row records (no sender text: that is in the blobs)."""

    reference: str
    request_id: int
    number: int
    channel: str
    message_id_sha256: str
    raw_sha256: str
    size: int
    received_at: datetime
    registration_id: int
    credential_id: int | None
    auth_results: dict[str, Any]
    raw_blob: str
    manifest_blob: str


class SubmissionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # -- the accept path ------------------------------------------------------
    def duplicate_of(self, message_id_sha256: str, raw_sha256: str) -> str | None:
        """The reference already stored for these bytes under this Message-ID, if any."""
        return duplicate_of(Reads(self.session.connection()), message_id_sha256, raw_sha256)

    def add(
        self,
        submission: NewSubmission,
        blobs: Sequence[StoredBlob],
        documents: Sequence[DocumentRow],
        now: datetime,
    ) -> int:
        """The blob, submission and document rows; returns the submission's id.

        Raises AlreadyStored when the same message (Message-ID and SHA-256)
        was committed meanwhile: the unique index settles two copies racing.
        """
        try:
            return self._insert(submission, blobs, documents, now)
        except IntegrityError as exc:
            raise AlreadyStored("this message is already stored") from exc

    def _insert(
        self,
        submission: NewSubmission,
        blobs: Sequence[StoredBlob],
        documents: Sequence[DocumentRow],
        now: datetime,
    ) -> int:
        writes = writes_of(self.session)
        # The submission row now (its unique index settles duplicates, its id is needed);
        # in a group commit's batch the blob and document rows are written with the
        # batch's others just before its commit (`Batch.insert_later`).
        submission_id = int(writes.one(INSERT_SUBMISSION, _submission_values(submission))[0])
        blob_rows = [
            {"key": b.key, "kind": b.kind, "sha256": b.sha256, "size": b.size, "created_at": now}
            for b in blobs
        ]
        document_rows = [
            {"submission_id": submission_id, "idx": d.index,
             "detected_type": d.detected_type, "size": d.size, "sha256": d.sha256,
             "blob": d.blob, "warnings": list(d.warnings) or None}
            for d in documents
        ]  # fmt: skip
        batch = batch_of(self.session)
        for statement, rows in ((INSERT_BLOBS, blob_rows), (INSERT_DOCUMENTS, document_rows)):
            if batch is not None:
                batch.insert_later(self.session, statement, rows)
            else:
                writes.many(statement, rows)
        return submission_id

    # -- reads ------------------------------------------------------------------
    def by_reference(self, reference: str) -> Submission | None:
        return self.session.scalars(
            select(Submission).where(Submission.reference == reference)
        ).one_or_none()

    def of_request(self, request_id: int) -> Sequence[Submission]:
        return self.session.scalars(
            select(Submission)
            .where(Submission.request_id == request_id)
            .order_by(Submission.number)
        ).all()

    def documents(self, submission_id: int) -> Sequence[Document]:
        return self.session.scalars(
            select(Document).where(Document.submission_id == submission_id).order_by(Document.idx)
        ).all()

    def documents_of(self, submission_ids: Collection[int]) -> dict[int, list[Document]]:
        """The documents of several submissions at once, by submission id, in index order."""
        found: dict[int, list[Document]] = {submission_id: [] for submission_id in submission_ids}
        if not found:
            return found
        rows = self.session.scalars(
            select(Document)
            .where(Document.submission_id.in_(list(found)))
            .order_by(Document.submission_id, Document.idx)
        )
        for document in rows:
            found[document.submission_id].append(document)
        return found

    def document(self, submission_id: int, index: int) -> Document | None:
        return self.session.scalars(
            select(Document).where(Document.submission_id == submission_id, Document.idx == index)
        ).one_or_none()

    def scoped(
        self, reference: str, courts: Collection[str] | None
    ) -> tuple[Submission, str] | None:
        """(submission, court code) by reference, None if unknown or outside `courts`."""
        query = (
            select(Submission, Court.code)
            .join(Request, Request.id == Submission.request_id)
            .join(Court, Court.id == Request.court_id)
            .where(Submission.reference == reference)
        )
        if courts is not None:
            query = query.where(Court.code.in_(list(courts)))
        row = self.session.execute(query).one_or_none()
        return None if row is None else (row[0], row[1])

    def listing(self, court: str | None = None) -> Sequence[tuple[Submission, str, int]]:
        """(submission, court code, number of documents) in arrival order."""
        documents = (
            select(func.count(Document.id))
            .where(Document.submission_id == Submission.id)
            .scalar_subquery()
        )
        query = (
            select(Submission, Court.code, documents)
            .join(Request, Request.id == Submission.request_id)
            .join(Court, Court.id == Request.court_id)
            .order_by(Submission.id)
        )
        if court:
            query = query.where(Court.code == court)
        return [(sub, code, int(count)) for sub, code, count in self.session.execute(query).all()]

    def ids_of(self, references: Iterable[str]) -> dict[str, int]:
        """Submission ids by reference (Core: it runs in the IMAP puller's Core-only units)."""
        wanted = set(references)
        if not wanted:
            return {}
        rows = self.session.connection().execute(
            select(SUBMISSIONS.c.reference, SUBMISSIONS.c.id).where(
                SUBMISSIONS.c.reference.in_(wanted)
            )
        )
        return {reference: submission_id for reference, submission_id in rows}

    def references_of(self, submission_ids: Iterable[int]) -> dict[int, str]:
        wanted = set(submission_ids)
        if not wanted:
            return {}
        rows = self.session.execute(
            select(Submission.id, Submission.reference).where(Submission.id.in_(wanted))
        )
        return {submission_id: reference for submission_id, reference in rows if reference}

    def holders(self, sha256s: Sequence[str]) -> Sequence[tuple[str, int, str]]:
        """(document SHA-256, submission id, reference) for documents with these hashes."""
        rows = self.session.execute(
            select(Document.sha256, Submission.id, Submission.reference)
            .join(Submission, Submission.id == Document.submission_id)
            .where(Document.sha256.in_(sha256s))
            .order_by(Submission.id)
        )
        return [(digest, submission_id, reference) for digest, submission_id, reference in rows]


class BlobRepository:
    """The blob rows: every blob the store should hold, and its hash."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, key: str) -> Blob | None:
        return self.session.get(Blob, key)

    def hashes(self) -> dict[str, str]:
        """key -> SHA-256 of every recorded blob (but those a purge is removing)."""
        rows = self.session.scalars(select(Blob).where(Blob.purged_at.is_(None)))
        return {row.key: row.sha256 for row in rows}

    def purging(self) -> set[str]:
        """Keys of the blobs a purge has started to remove (their rows are gone already)."""
        return set(self.session.scalars(select(Blob.key).where(Blob.purged_at.is_not(None))))

    def recorded(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` have a row (asked in chunks, so a long listing is many small queries)."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found.update(self.session.scalars(select(Blob.key).where(Blob.key.in_(chunk))))
        return found


def _submission_values(submission: NewSubmission) -> dict[str, Any]:
    return {
        "reference": submission.reference,
        "request_id": submission.request_id,
        "number": submission.number,
        "channel": submission.channel,
        "message_id_sha256": submission.message_id_sha256,
        "raw_sha256": submission.raw_sha256,
        "size": submission.size,
        "received_at": submission.received_at,
        "registration_id": submission.registration_id,
        "credential_id": submission.credential_id,
        "auth_results": submission.auth_results,
        "raw_blob": submission.raw_blob,
        "manifest_blob": submission.manifest_blob,
    }
