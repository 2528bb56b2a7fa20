"""depot@: verify the code, check documents, encrypt and store, commit, queue the receipt."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update
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
from gateway.storage.groupcommit import Batch, GroupCommitter
from gateway.storage.models import (
    Blob,
    Code,
    Court,
    CourtKey,
    Document,
    Registration,
    Request,
    Submission,
    table_of,
)
from gateway.storage.repositories import CourtRepository

log = logging.getLogger("gateway.submit")


# The writer's statements (see SubmissionStore._commit): Core, built once, so that
# each execution reuses the statement's memoised cache key and compiled form.
REQUESTS, SUBMISSIONS = table_of(Request), table_of(Submission)
COUNT_SUBMISSION = (
    update(REQUESTS)
    .where(REQUESTS.c.id == bindparam("request_id"))
    .values(submission_count=REQUESTS.c.submission_count + 1, updated_at=bindparam("now"))
    .returning(REQUESTS.c.reference, REQUESTS.c.submission_count)
)
INSERT_BLOBS = insert(table_of(Blob))
INSERT_SUBMISSION = insert(SUBMISSIONS).returning(SUBMISSIONS.c.id)
INSERT_DOCUMENTS = insert(table_of(Document))
# The per-message reads (SubmissionStore._look_up), built once too.
DUPLICATE = select(SUBMISSIONS.c.reference).where(
    SUBMISSIONS.c.message_id_sha256 == bindparam("mid"),
    SUBMISSIONS.c.raw_sha256 == bindparam("raw"),
)
ACTIVE_FINGERPRINTS = select(CourtKey.fingerprint).where(
    CourtKey.court_id == bindparam("court_id"), CourtKey.status == "active"
)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    kind: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class _CodeCheck:
    """What reading a code found: its rows, or why it cannot be used."""

    code: Code | None = None
    request: Request | None = None
    court: Court | None = None
    failure: CodeError | None = None


class CourtEncryptors:
    """One Encryptor per court, rebuilt when the court's active keys change.

    Each message reads only the fingerprints of the court's active keys (one
    narrow query); the armoured keys are loaded and parsed when that set changes.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, ...], Encryptor] = {}
        self._lock = threading.Lock()

    def for_court(self, session: Session, court_id: int) -> Encryptor:
        marker = tuple(sorted(session.scalars(ACTIVE_FINGERPRINTS, {"court_id": court_id})))
        if not marker:
            raise KeyRefused("court has no active encryption key")
        with self._lock:
            encryptor = self._cache.get(marker)
        if encryptor is not None:
            return encryptor
        keys = CourtRepository(session).keys(court_id)
        if not keys:
            raise KeyRefused("court has no active encryption key")
        encryptor = Encryptor.for_keys([k.armored for k in keys])
        with self._lock:
            self._cache[tuple(sorted(k.fingerprint for k in keys))] = encryptor
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
        committer: GroupCommitter | None = None,
    ) -> None:
        self.db = db
        self.committer = committer or GroupCommitter(db)
        self.codes = codes
        self.blobs = blobs
        self.policy = policy
        self.disk_reserve = disk_reserve
        self.clock = clock
        self.observe = observe
        self.encryptors = CourtEncryptors()

    # -- the role handler -------------------------------------------------
    def handle(self, ctx: Context) -> Outcome:
        raw_sha256 = ctx.raw_sha256
        mid_sha256 = message_id_hash(ctx.parsed.message_id)
        with timed(self.observe, "code"):
            found = self._look_up(ctx, mid_sha256, raw_sha256)
        if isinstance(found, str):
            return Outcome("submitted", found, duplicate=True)
        code, request, court, encryptor = found
        attachments = filing_attachments(ctx.parsed)
        with timed(self.observe, "documents"):
            documents = check_documents(
                self.policy, [(a.filename, a.declared_type, a.content) for a in attachments]
            )
        if self.blobs.free_bytes() < self.disk_reserve + 2 * len(ctx.inbound.raw):
            raise DiskFull("insufficient system storage")
        written = self._write_payload(ctx.inbound.raw, encryptor, documents, attachments)

        def commit(session: Session, batch: Batch) -> Outcome:
            return self._commit(
                session,
                batch,
                ctx,
                code,
                request,
                court,
                documents,
                written,
                encryptor,
                mid_sha256,
                raw_sha256,
            )

        try:
            with timed(self.observe, "commit"):
                return self.committer.run(commit)
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

    def _look_up(
        self, ctx: Context, mid_sha256: str, raw_sha256: str
    ) -> str | tuple[Code, Request, Court, Encryptor]:
        """One read for what the message needs: a duplicate's reference, or its code and court.

        A duplicate is answered before the code is looked at (its code may be
        spent or sealed by now).
        """
        canonical = self._canonical_code(ctx)
        now = self.clock()
        with self.db.reading() as session:
            existing = self._duplicate_in(session, mid_sha256, raw_sha256)
            if existing is not None:
                return existing
            if canonical is None:
                raise CodeMissing("no code found in the subject or the address")
            checked = self._check_code(session, ctx, canonical, now)
            encryptor = (
                self.encryptors.for_court(session, checked.court.id) if checked.court else None
            )
            session.expunge_all()
        code, request, court = self._accepted_or_refuse(ctx, checked, now)
        assert encryptor is not None
        return code, request, court, encryptor

    def verify_code(self, ctx: Context) -> tuple[Code, Request, Court]:
        """Find the code (sub-address first, then subject) and check it; failures count."""
        canonical = self._canonical_code(ctx)
        if canonical is None:
            raise CodeMissing("no code found in the subject or the address")
        now = self.clock()
        with self.db.reading() as session:
            checked = self._check_code(session, ctx, canonical, now)
            session.expunge_all()
        return self._accepted_or_refuse(ctx, checked, now)

    @staticmethod
    def _canonical_code(ctx: Context) -> str | None:
        tag = ctx.inbound.recipient.tag
        return (normalise_code(tag) if tag else None) or find_code_in_subject(ctx.parsed.subject)

    def _check_code(
        self, session: Session, ctx: Context, canonical: str, now: datetime
    ) -> _CodeCheck:
        """Read and check the code; only reads (a refusal is written afterwards)."""
        try:
            self.codes.check_not_locked(session, ctx.throttle_keys, now)
            code, request = self.codes.find(
                session, canonical, ctx.verdict.from_address.key, ctx.registrations
            )
        except CodeError as exc:
            return _CodeCheck(failure=exc)
        try:
            self.codes.check_usable(code, request, now)
        except CodeError as exc:
            return _CodeCheck(code=code, failure=exc)
        return _CodeCheck(code, request, session.get(Court, request.court_id))

    def _accepted_or_refuse(
        self, ctx: Context, checked: _CodeCheck, now: datetime
    ) -> tuple[Code, Request, Court]:
        """The usable code's rows, or the refusal recorded in its own write and raised."""
        if isinstance(checked.failure, CodeExpired) and checked.code is not None:
            self._seal(checked.code.id, now)  # an expired code seals its request
            raise checked.failure
        if checked.failure is not None:
            self._record_code_failure(ctx, checked.failure, now)
            raise checked.failure
        assert checked.code and checked.request and checked.court
        return checked.code, checked.request, checked.court

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

    def _write(
        self, encryptor: Encryptor, kind: str, data: bytes, *, sync: bool = True
    ) -> StoredBlob:
        """Encrypt and store one blob; its directory entry is made durable by the commit's batch.

        With `sync=False` the file itself is fsync'd by the batch too (`_sync_files`).
        """
        with timed(self.observe, "encrypt"):
            sealed = encryptor.encrypt(data)
        key = self.blobs.new_key(kind, self.clock())
        with timed(self.observe, "blob_write"):
            digest = self.blobs.write(key, sealed, sync_dir=False, sync=sync)
        return StoredBlob(key, kind, digest, len(sealed))

    def _sync_files(self, batch: Batch, blob: StoredBlob) -> None:
        """Before the batch commits, fsync this blob's file with the batch's others at once.

        The manifest is written by the single writer thread: an fsync per
        message there would hold every message of the batch behind it.
        """
        keys: list[str] = batch.shared("blob-files", list)
        if not keys:
            batch.before_commit("blob-files", functools.partial(self.blobs.sync_files, keys))
        keys.append(blob.key)

    def _sync_dirs(self, batch: Batch, written: Sequence[StoredBlob]) -> None:
        """Before the batch commits, fsync (once each) the directories of its new blobs."""
        for blob in written:
            directory = self.blobs.directory_of(blob.key)
            batch.before_commit(
                ("blob-dir", directory), functools.partial(self.blobs.sync_directory, directory)
            )

    def _discard(self, written: Sequence[StoredBlob]) -> None:
        for blob in written:
            try:
                self.blobs.delete(blob.key)
            except Exception:  # `check` reports what could not be removed
                log.warning("could not remove blob %s after a failed submission", blob.key)

    def _commit(
        self,
        session: Session,
        batch: Batch,
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
        """One message's rows, in a savepoint of the group commit's transaction.

        Runs in the single writer thread, so it is written with Core
        statements (a few round trips, no unit-of-work flushes): its cost
        bounds how many messages per second one writer commits.
        """
        now = self.clock()
        self.codes.consume(session, code, now)
        conn = session.connection()
        # Counting the submission also takes the request's row lock (PostgreSQL).
        counted = conn.execute(COUNT_SUBMISSION, {"request_id": request.id, "now": now}).one()
        request_reference, number = str(counted[0]), int(counted[1])
        registration = next(r for r in ctx.registrations if r.id == code.registration_id)
        reference = f"{request_reference}/{number}"
        manifest = submission_manifest(
            request_reference=request_reference,
            submission_reference=reference,
            court=court.code,
            measure=registration.measure,
            kind=request.kind,
            channel=ctx.inbound.channel.value,
            received_at=ctx.inbound.received_at,
            sender_address=registration.address,
            registration_id=registration.id,
            authentication={**ctx.auth_results(), "code_id": code.id, "credential_id": None},
            parsed=ctx.parsed,
            raw_sha256=raw_sha256,
            documents=documents,
        )
        manifest_blob = self._write(encryptor, "manifest", encode(manifest), sync=False)
        written.append(manifest_blob)
        self._sync_files(batch, manifest_blob)
        self._sync_dirs(batch, written)
        submission_id = self._insert_rows(
            conn, ctx, request.id, reference, number, registration, documents, written,
            mid_sha256, raw_sha256, now,
        )  # fmt: skip
        self._queue_receipt(
            session, registration, court, request_reference, reference, ctx, documents,
            raw_sha256, now,
        )  # fmt: skip
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
                "submission": submission_id,
            },
        )
        return Outcome("submitted", reference)

    @staticmethod
    def _insert_rows(
        conn: Connection,
        ctx: Context,
        request_id: int,
        reference: str,
        number: int,
        registration: Registration,
        documents: Sequence[CheckedDocument],
        written: Sequence[StoredBlob],
        mid_sha256: str,
        raw_sha256: str,
        now: datetime,
    ) -> int:
        """The blob, submission and document rows; returns the submission's id."""
        conn.execute(
            INSERT_BLOBS,
            [
                {"key": b.key, "kind": b.kind, "sha256": b.sha256, "size": b.size,
                 "created_at": now}
                for b in written
            ],
        )  # fmt: skip
        raw_blob, doc_blobs, manifest_blob = written[0], written[1:-1], written[-1]
        submission_id = conn.execute(
            INSERT_SUBMISSION,
            {
                "reference": reference,
                "request_id": request_id,
                "number": number,
                "channel": ctx.inbound.channel.value,
                "message_id_sha256": mid_sha256,
                "raw_sha256": raw_sha256,
                "size": len(ctx.inbound.raw),
                "received_at": ctx.inbound.received_at,
                "registration_id": registration.id,
                "credential_id": ctx.inbound.credential_id,
                "auth_results": ctx.auth_results(),
                "raw_blob": raw_blob.key,
                "manifest_blob": manifest_blob.key,
            },
        ).scalar_one()
        if documents:
            conn.execute(
                INSERT_DOCUMENTS,
                [
                    {"submission_id": submission_id, "idx": d.index,
                     "detected_type": d.detected_type, "size": d.size, "sha256": d.sha256,
                     "blob": blob.key, "warnings": list(d.warnings) or None}
                    for d, blob in zip(documents, doc_blobs, strict=True)
                ],
            )  # fmt: skip
        return int(submission_id)

    def _queue_receipt(
        self,
        session: Session,
        registration: Registration,
        court: Court,
        request_reference: str,
        reference: str,
        ctx: Context,
        documents: Sequence[CheckedDocument],
        raw_sha256: str,
        now: datetime,
    ) -> None:
        values = {
            "court": court.code,
            "measure": registration.measure,
            "request_reference": request_reference,
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
            return self._duplicate_in(session, mid_sha256, raw_sha256)

    @staticmethod
    def _duplicate_in(session: Session, mid_sha256: str, raw_sha256: str) -> str | None:
        found = session.connection().execute(DUPLICATE, {"mid": mid_sha256, "raw": raw_sha256})
        return found.scalar()


def _actor(ctx: Context) -> str:
    return f"{ctx.inbound.channel.value}:{ctx.verdict.from_address.key}"
