"""depot@: verify the code, check documents, encrypt and store, commit, queue the receipt."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.audit.chain import append_event
from gateway.errors import (
    CodeError,
    CodeExpired,
    CodeMissing,
    DiskFull,
    KeyRefused,
)
from gateway.ingest.documents import CheckedDocument, DocumentPolicy, check_documents
from gateway.ingest.manifest import encode, submission_manifest
from gateway.ingest.mime import Attachment, ParsedMessage
from gateway.ingest.pipeline import Context, Outcome
from gateway.metrics import Observe, no_observe, timed
from gateway.model import Clock
from gateway.otp.codes import find_code_in_subject, normalise_code
from gateway.otp.service import CodeService
from gateway.outbox.queue import enqueue
from gateway.outbox.templates import DocumentLine, format_documents, format_utc
from gateway.storage.blobstore import BlobStore
from gateway.storage.crypto import Encryptor
from gateway.storage.db import Database
from gateway.storage.models import Blob, Code, Court, Document, Registration, Request, Submission
from gateway.storage.repositories import CourtRepository

log = logging.getLogger("gateway.submit")


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    kind: str
    sha256: str
    size: int


class CourtEncryptors:
    """One Encryptor per court, rebuilt when the court's active keys change."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], Encryptor] = {}
        self._lock = threading.Lock()

    def for_court(self, session: Session, court_id: int) -> Encryptor:
        keys = CourtRepository(session).keys(court_id)
        if not keys:
            raise KeyRefused("court has no active encryption key")
        marker = tuple(sorted(k.fingerprint for k in keys))
        with self._lock:
            encryptor = self._cache.get(marker)
            if encryptor is None:
                encryptor = Encryptor.for_keys([k.armored for k in keys])
                self._cache[marker] = encryptor
            return encryptor


# Signature parts of multipart/signed mail (PGP/MIME, S/MIME) are not filings: they stay
# in the stored raw message but are neither documents nor refused as unknown types.
SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)


def filing_attachments(parsed: ParsedMessage) -> list[Attachment]:
    return [a for a in parsed.attachments if a.declared_type not in SIGNATURE_TYPES]


def message_id_hash(message_id: str) -> str:
    return hashlib.sha256(message_id.strip().lower().encode("utf-8", "replace")).hexdigest()


class SubmissionStore:
    """The depot@ role: one accepted message becomes one submission of the code's request."""

    def __init__(
        self,
        *,
        db: Database,
        codes: CodeService,
        blobs: BlobStore,
        policy: DocumentPolicy,
        disk_reserve: int,
        clock: Clock,
        observe: Observe = no_observe,
    ) -> None:
        self.db = db
        self.codes = codes
        self.blobs = blobs
        self.policy = policy
        self.disk_reserve = disk_reserve
        self.clock = clock
        self.observe = observe
        self.encryptors = CourtEncryptors()

    # -- the role handler -------------------------------------------------
    def handle(self, ctx: Context) -> Outcome:
        raw_sha256 = hashlib.sha256(ctx.inbound.raw).hexdigest()
        mid_sha256 = message_id_hash(ctx.parsed.message_id)
        existing = self._find_duplicate(mid_sha256, raw_sha256)
        if existing:
            return Outcome("submitted", existing, duplicate=True)
        with timed(self.observe, "code"):
            code, request, court = self.verify_code(ctx)
        attachments = filing_attachments(ctx.parsed)
        with timed(self.observe, "documents"):
            documents = check_documents(
                self.policy, [(a.filename, a.declared_type, a.content) for a in attachments]
            )
        if self.blobs.free_bytes() < self.disk_reserve + 2 * len(ctx.inbound.raw):
            raise DiskFull("insufficient system storage")
        with self.db.reading() as session:
            encryptor = self.encryptors.for_court(session, court.id)
        written = self._write_payload(ctx.inbound.raw, encryptor, documents, attachments)
        try:
            with timed(self.observe, "commit"):
                return self._commit(
                    ctx, code, request, court, documents, written, encryptor, mid_sha256, raw_sha256
                )
        except IntegrityError:
            # The same message committed meanwhile (a client retry racing us).
            self._discard(written)
            existing = self._find_duplicate(mid_sha256, raw_sha256)
            if existing is None:
                raise
            return Outcome("submitted", existing, duplicate=True)
        except BaseException:
            self._discard(written)
            raise

    def verify_code(self, ctx: Context) -> tuple[Code, Request, Court]:
        """Find the code (sub-address first, then subject) and check it; failures count."""
        tag = ctx.inbound.recipient.tag
        canonical = (normalise_code(tag) if tag else None) or find_code_in_subject(
            ctx.parsed.subject
        )
        if canonical is None:
            raise CodeMissing("no code found in the subject or the address")
        now = self.clock()
        # The common case only reads; a refusal is recorded in its own write.
        failure: CodeError | None = None
        court: Court | None = None
        with self.db.reading() as session:
            self.codes.check_not_locked(session, ctx.throttle_keys, now)
            try:
                code, request = self.codes.find(
                    session, canonical, ctx.verdict.from_address.key, ctx.registrations
                )
                self.codes.check_usable(code, request, now)
                court = session.get(Court, request.court_id)
            except CodeError as exc:
                failure = exc
            session.expunge_all()
        if isinstance(failure, CodeExpired):
            self._seal(code.id, now)
            raise failure
        if failure is not None:
            self._record_code_failure(ctx, failure, now)
            raise failure
        assert court is not None
        return code, request, court

    def _record_code_failure(self, ctx: Context, exc: CodeError, now: datetime) -> None:
        with self.db.transaction() as session:
            self.codes.record_failure(session, ctx.throttle_keys, now)
            append_event(
                session, now, "code.failed", actor=_actor(ctx), data={"reason": type(exc).__name__}
            )

    def _seal(self, code_id: int, now: datetime) -> None:
        """An expired code seals its request (if the sweeper has not done it yet)."""
        with self.db.transaction() as session:
            code = session.get(Code, code_id)
            assert code is not None
            request = session.get(Request, code.request_id, with_for_update=True)
            if request is not None and request.status == "open":
                self.codes.close(session, code, request, now)

    # -- storage ----------------------------------------------------------
    def _write_payload(
        self,
        raw: bytes,
        encryptor: Encryptor,
        documents: Sequence[CheckedDocument],
        attachments: Sequence[Attachment],
    ) -> list[StoredBlob]:
        written: list[StoredBlob] = []
        try:
            written.append(self._write(encryptor, "raw", raw))
            for document, attachment in zip(documents, attachments, strict=True):
                written.append(self._write(encryptor, "doc", attachment.content))
                assert document.size == len(attachment.content)
        except BaseException:
            self._discard(written)
            raise
        return written

    def _write(self, encryptor: Encryptor, kind: str, data: bytes) -> StoredBlob:
        with timed(self.observe, "encrypt"):
            sealed = encryptor.encrypt(data)
        key = self.blobs.new_key(kind, self.clock())
        with timed(self.observe, "blob_write"):
            digest = self.blobs.write(key, sealed)
        return StoredBlob(key, kind, digest, len(sealed))

    def _discard(self, written: Sequence[StoredBlob]) -> None:
        for blob in written:
            try:
                self.blobs.delete(blob.key)
            except Exception:  # `check` reports what could not be removed
                log.warning("could not remove blob %s after a failed submission", blob.key)

    def _commit(
        self,
        ctx: Context,
        code: Code,
        request: Request,
        court: Court,
        documents: Sequence[CheckedDocument],
        written: list[StoredBlob],
        encryptor: Encryptor,
        mid_sha256: str,
        raw_sha256: str,
    ) -> Outcome:
        now = self.clock()
        with self.db.transaction() as session:
            self.codes.consume(session, code, now)
            live = session.get(Request, request.id, with_for_update=True)
            registration = session.get(Registration, code.registration_id)
            assert live is not None and registration is not None
            live.submission_count += 1
            live.updated_at = now
            reference = f"{live.reference}/{live.submission_count}"
            manifest = submission_manifest(
                request_reference=live.reference,
                submission_reference=reference,
                court=court.code,
                measure=registration.measure,
                kind=live.kind,
                channel=ctx.inbound.channel.value,
                received_at=ctx.inbound.received_at,
                sender_address=registration.address,
                registration_id=registration.id,
                authentication={**ctx.auth_results(), "code_id": code.id, "credential_id": None},
                parsed=ctx.parsed,
                raw_sha256=raw_sha256,
                documents=documents,
            )
            manifest_blob = self._write(encryptor, "manifest", encode(manifest))
            written.append(manifest_blob)
            submission = self._insert_rows(
                session,
                ctx,
                live,
                reference,
                registration,
                documents,
                written,
                mid_sha256,
                raw_sha256,
            )
            self._queue_receipt(
                session, registration, court, live, reference, ctx, documents, raw_sha256, now
            )
            append_event(
                session,
                now,
                "message.accepted",
                actor=_actor(ctx),
                subject=reference,
                data={
                    "raw_sha256": raw_sha256,
                    "documents": len(documents),
                    "dkim": ctx.verdict.dkim_result,
                    "submission": submission.id,
                },
            )
        return Outcome("submitted", reference)

    def _insert_rows(
        self,
        session: Session,
        ctx: Context,
        request: Request,
        reference: str,
        registration: Registration,
        documents: Sequence[CheckedDocument],
        written: Sequence[StoredBlob],
        mid_sha256: str,
        raw_sha256: str,
    ) -> Submission:
        now = self.clock()
        for blob in written:
            session.add(
                Blob(
                    key=blob.key, kind=blob.kind, sha256=blob.sha256, size=blob.size, created_at=now
                )
            )
        raw_blob, doc_blobs, manifest_blob = written[0], written[1:-1], written[-1]
        submission = Submission(
            reference=reference,
            request_id=request.id,
            number=request.submission_count,
            channel=ctx.inbound.channel.value,
            message_id_sha256=mid_sha256,
            raw_sha256=raw_sha256,
            size=len(ctx.inbound.raw),
            received_at=ctx.inbound.received_at,
            registration_id=registration.id,
            credential_id=ctx.inbound.credential_id,
            auth_results=ctx.auth_results(),
            raw_blob=raw_blob.key,
            manifest_blob=manifest_blob.key,
        )
        session.add(submission)
        session.flush()
        for document, blob in zip(documents, doc_blobs, strict=True):
            session.add(
                Document(
                    submission_id=submission.id,
                    idx=document.index,
                    detected_type=document.detected_type,
                    size=document.size,
                    sha256=document.sha256,
                    blob=blob.key,
                )
            )
        session.flush()
        return submission

    def _queue_receipt(
        self,
        session: Session,
        registration: Registration,
        court: Court,
        request: Request,
        reference: str,
        ctx: Context,
        documents: Sequence[CheckedDocument],
        raw_sha256: str,
        now: datetime,
    ) -> None:
        values = {
            "court": court.code,
            "measure": registration.measure,
            "request_reference": request.reference,
            "submission_reference": reference,
            "received_at": format_utc(ctx.inbound.received_at),
            "documents": format_documents(
                DocumentLine(d.filename, d.size, d.sha256) for d in documents
            ),
            "message_sha256": raw_sha256,
        }
        enqueue(
            session,
            kind="receipt",
            recipient=registration.address,
            values=values,
            now=now,
            related_reference=reference,
        )

    def _find_duplicate(self, mid_sha256: str, raw_sha256: str) -> str | None:
        with self.db.reading() as session:
            return session.scalar(
                select(Submission.reference).where(
                    Submission.message_id_sha256 == mid_sha256,
                    Submission.raw_sha256 == raw_sha256,
                )
            )


def _actor(ctx: Context) -> str:
    return f"{ctx.inbound.channel.value}:{ctx.verdict.from_address.key}"
