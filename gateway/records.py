"""What the API reads: requests, submissions, documents, stored blobs, courts and audit events.

Every read takes the caller's scope (the courts it may see, None for every
court); anything outside it is `NotFound`, exactly like something that does
not exist, so a reference cannot be probed.  Listings are pages in id (or
sequence) order after a cursor: `Page.after` is the last id returned, and
None when there is nothing more.  Only what the database holds in clear is
returned; the stored blobs are handed out as their encrypted bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.chain import ChainReport, verify_chain
from gateway.errors import GatewayError, NotFound
from gateway.ingest.manifest import request_manifest, rfc3339
from gateway.storage.audit import AuditRepository
from gateway.storage.blobstore import BlobStorage
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.models import AuditEvent, Court, CourtKey, Document, Request, Submission
from gateway.storage.requests import RequestFilter, RequestRepository
from gateway.storage.submissions import BlobRepository, SubmissionRepository

Scope = Collection[str] | None


class StoredBlobMismatch(GatewayError):
    """A stored blob is missing or does not match its recorded hash (it is not handed out).

    Deliberately outside the API's table of client errors: it answers 503
    with a correlation id, and the daily check reports the blob.
    """


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    after: int | None
    """The cursor of the next page (the last id or sequence number returned), None at the end."""


@dataclass(frozen=True, slots=True)
class StoredBytes:
    """An encrypted blob as stored: its bytes, their recorded SHA-256 and a download name."""

    data: bytes = field(repr=False)
    sha256: str
    filename: str


class Records:
    """Court-scoped reads for the HTTP API."""

    def __init__(self, db: Database, blobs: BlobStorage) -> None:
        self.db = db
        self.blobs = blobs

    # -- courts -----------------------------------------------------------------
    def courts(self, scope: Scope) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            repo = CourtRepository(session)
            return [
                _court_dict(court, repo.keys(court.id, active_only=False))
                for court in repo.all()
                if scope is None or court.code in scope
            ]

    def court(self, code: str, scope: Scope) -> dict[str, Any]:
        for court in self.courts(scope):
            if court["code"] == code:
                return court
        raise NotFound(f"unknown court {code}")

    # -- requests ---------------------------------------------------------------
    def requests(self, wanted: RequestFilter, after: int, limit: int) -> Page:
        with self.db.reading() as session:
            rows = RequestRepository(session).page(wanted, after, limit + 1)
            items = [_request_dict(req, code, measure) for req, code, measure in rows[:limit]]
            last = rows[limit - 1][0].id if len(rows) > limit else None
            return Page(items, last)

    def request(self, reference: str, scope: Scope) -> dict[str, Any]:
        """One request with its submissions and their documents (in clear: no sender text)."""
        with self.db.reading() as session:
            request, code, measure = self._request(session, reference, scope)
            submissions = SubmissionRepository(session)
            rows = submissions.of_request(request.id)
            documents = submissions.documents_of([row.id for row in rows])
            found = _request_dict(request, code, measure)
            found["submissions"] = [_submission_dict(row, documents[row.id]) for row in rows]
            return found

    def request_manifest(self, reference: str, scope: Scope) -> dict[str, Any]:
        """The request's manifest (gateway.request/1): it lists its submissions.

        It holds nothing a sender wrote, so it is built from the database in
        clear, as `submissions export` writes it; each submission's own
        manifest is the encrypted one (`submission_blob(…, "manifest")`).
        """
        with self.db.reading() as session:
            request, code, measure = self._request(session, reference, scope)
            listing = [
                {
                    "reference": row.reference,
                    "folder": str(row.number),
                    "received_at": rfc3339(row.received_at),
                    "channel": row.channel,
                    "raw_sha256": row.raw_sha256,
                }
                for row in SubmissionRepository(session).of_request(request.id)
            ]
            return request_manifest(
                reference=request.reference, court=code, measure=measure, kind=request.kind,
                status=request.status, status_reason=request.status_reason,
                opened_at=request.opened_at, sealed_at=request.sealed_at, submissions=listing,
            )  # fmt: skip

    def submission_blob(self, reference: str, part: str, scope: Scope) -> StoredBytes:
        """The encrypted raw message (`message`) or manifest (`manifest`) of a submission."""
        with self.db.reading() as session:
            submission = self._submission(session, reference, scope)
            if part == "message":
                key, suffix = submission.raw_blob, "eml"
            else:
                key, suffix = submission.manifest_blob, "manifest"
            name = f"{_file_stem(submission.reference)}.{suffix}.pgp"
            return self._stored(session, key, name)

    def document_blob(self, reference: str, index: int, scope: Scope) -> StoredBytes:
        with self.db.reading() as session:
            submission = self._submission(session, reference, scope)
            document = SubmissionRepository(session).document(submission.id, index)
            if document is None:
                raise NotFound(f"submission {submission.reference} has no document {index}")
            stem = _file_stem(submission.reference)
            return self._stored(session, document.blob, f"{stem}.document-{index:02d}.pgp")

    # -- audit ------------------------------------------------------------------
    def audit_events(self, after: int, limit: int, action: str | None) -> Page:
        with self.db.reading() as session:
            rows = AuditRepository(session).page(after, limit + 1, action)
            items = [_event_dict(event) for event in rows[:limit]]
            last = rows[limit - 1].seq if len(rows) > limit else None
            return Page(items, last)

    def verify_audit(self) -> ChainReport:
        with self.db.reading() as session:
            return verify_chain(AuditRepository(session))

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def _request(session: Session, reference: str, scope: Scope) -> tuple[Request, str, str]:
        found = RequestRepository(session).scoped(reference.strip().upper(), scope)
        if found is None:
            raise NotFound(f"unknown request {reference}")
        return found

    @staticmethod
    def _submission(session: Session, reference: str, scope: Scope) -> Submission:
        found = SubmissionRepository(session).scoped(reference.strip().upper(), scope)
        if found is None:
            raise NotFound(f"unknown submission {reference}")
        return found[0]

    def _stored(self, session: Session, key: str, filename: str) -> StoredBytes:
        blob = BlobRepository(session).get(key)
        try:
            data = self.blobs.read(key)
        except NotFound:  # a row without its blob is our fault, not the client's 404
            raise StoredBlobMismatch(f"stored blob {key} is missing") from None
        if blob is None or hashlib.sha256(data).hexdigest() != blob.sha256:
            raise StoredBlobMismatch(f"stored blob {key} does not match its recorded hash")
        return StoredBytes(data, blob.sha256, filename)


def _file_stem(reference: str) -> str:
    return reference.replace("/", "-")


def _court_dict(court: Court, keys: Sequence[CourtKey]) -> dict[str, Any]:
    return {
        "code": court.code,
        "name": court.name,
        "created_at": rfc3339(court.created_at),
        "keys": [
            {
                "fingerprint": key.fingerprint,
                "status": key.status,
                "expires_at": rfc3339(key.expires_at) if key.expires_at else None,
            }
            for key in keys
        ],
    }


def _request_dict(request: Request, court: str, measure: str) -> dict[str, Any]:
    return {
        "reference": request.reference,
        "court": court,
        "measure": measure,
        "kind": request.kind,
        "channel": request.channel,
        "status": request.status,
        "status_reason": request.status_reason,
        "submissions_count": request.submission_count,
        "opened_at": rfc3339(request.opened_at),
        "sealed_at": rfc3339(request.sealed_at) if request.sealed_at else None,
        "updated_at": rfc3339(request.updated_at),
        "held": request.held,
    }


def _submission_dict(submission: Submission, documents: Sequence[Document]) -> dict[str, Any]:
    return {
        "reference": submission.reference,
        "number": submission.number,
        "channel": submission.channel,
        "received_at": rfc3339(submission.received_at),
        "size": submission.size,
        "raw_sha256": submission.raw_sha256,
        "auth_results": submission.auth_results,
        "documents": [
            {
                "index": document.idx,
                "detected_type": document.detected_type,
                "size": document.size,
                "sha256": document.sha256,
                "warnings": list(document.warnings or []),
            }
            for document in documents
        ],
    }


def _event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(timespec="microseconds"),
        "action": event.action,
        "actor": event.actor,
        "subject": event.subject,
        "data": event.data,
        "prev_sha256": event.prev_sha256,
        "sha256": event.sha256,
    }
