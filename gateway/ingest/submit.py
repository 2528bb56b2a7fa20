"""depot@: one accepted message becomes one submission of its code's request.

The steps, each owned elsewhere: the code (`otp.verify`), the documents
(`ingest.documents`), encryption and blob writing (`storage.payload`), the
rows (`storage.submissions`, in the group commit of `storage.groupcommit`),
the receipt (`storage.outbox`) and the audit line (`storage.audit`).  This
module orders them and undoes the blobs when the commit fails.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import AlreadyStored, CommitUncertain, DiskFull
from gateway.ingest.documents import CheckedDocument, DocumentPolicy, check_documents
from gateway.ingest.manifest import Arrival, Filing, encode, submission_manifest
from gateway.ingest.mime import Attachment, filing_attachments
from gateway.ingest.pipeline import Action, Context, Outcome, PendingCommit, read_alone
from gateway.metrics import Observe, no_observe, timed
from gateway.model import Clock
from gateway.otp.verify import CodeCheck, CodeClaim, CodeVerifier, VerifiedCode, claim_of
from gateway.outbox.receiptfacts import documents_json
from gateway.outbox.templates import DocumentLine, format_documents, format_utc
from gateway.storage.audit import append_event
from gateway.storage.crypto import Encryptor
from gateway.storage.db import Database, Reads, Session
from gateway.storage.groupcommit import Batch, GroupCommitter, Work
from gateway.storage.outbox import enqueue_later
from gateway.storage.payload import PayloadWriter
from gateway.storage.registrations import ActiveRegistration
from gateway.storage.requests import RequestRepository
from gateway.storage.submissions import (
    DocumentRow,
    NewSubmission,
    StoredBlob,
    SubmissionRepository,
    duplicate_of,
)


def message_id_hash(message_id: str) -> str:
    return hashlib.sha256(message_id.strip().lower().encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Duplicate:
    """These bytes were stored before under this Message-ID: answer with that reference."""

    reference: str


@dataclass(frozen=True, slots=True)
class Admitted:
    """A live code of the sender's, and the encryptor for its court's keys."""

    verified: VerifiedCode
    encryptor: Encryptor


@dataclass(frozen=True, slots=True)
class _LookedUp:
    """What the read found of a message's code: settled (refusal written) after the read."""

    claim: CodeClaim
    now: datetime
    checked: CodeCheck
    encryptor: Encryptor | None


@dataclass(frozen=True, slots=True)
class _Pending:
    """A submission written to the blob store, waiting for its rows to commit."""

    ctx: Context
    admitted: Admitted
    registration: ActiveRegistration
    documents: Sequence[CheckedDocument]
    written: list[StoredBlob]
    mid_sha256: str


class SubmissionStore:
    """The depot@ role handler: orders the steps; each step lives in its own module."""

    def __init__(
        self,
        *,
        db: Database,
        verifier: CodeVerifier,
        payload: PayloadWriter,
        policy: DocumentPolicy,
        disk_reserve: int,
        clock: Clock,
        committer: GroupCommitter,
        observe: Observe = no_observe,
    ) -> None:
        self.db = db
        self.verifier = verifier
        self.payload = payload
        self.policy = policy
        self.disk_reserve = disk_reserve
        self.clock = clock
        self.committer = committer
        self.observe = observe

    def __call__(self, ctx: Context) -> Outcome | PendingCommit:
        """The whole role, its reads in a transaction of their own."""
        return read_alone(self.db, self.read, ctx)

    def read(self, reads: Reads, ctx: Context) -> Callable[[], Outcome | PendingCommit]:
        """The message's reads, in the pipeline's read transaction (`ReadsFirst`)."""
        mid_sha256 = message_id_hash(ctx.parsed.message_id)
        with timed(self.observe, "code"):
            found = self._look_up(reads, ctx, mid_sha256)
        return functools.partial(self._submit, ctx, mid_sha256, found)

    def _submit(
        self, ctx: Context, mid_sha256: str, found: Duplicate | _LookedUp
    ) -> Outcome | PendingCommit:
        """After the read: settle the code, then documents, blobs and the group commit."""
        if isinstance(found, Duplicate):
            return Outcome(Action.SUBMITTED, found.reference, duplicate=True)
        verified = self.verifier.settle(found.checked, found.claim, found.now)
        assert found.encryptor is not None
        admitted = Admitted(verified, found.encryptor)
        attachments = filing_attachments(ctx.parsed)
        with timed(self.observe, "documents"):
            documents = self._check_documents(attachments)
        written = write_payload(
            self.payload, self.disk_reserve, admitted.encryptor, ctx.inbound.raw, attachments
        )
        pending = _Pending(ctx, admitted, verified.registration, documents, written, mid_sha256)
        return queue_commit(
            self.committer,
            self.payload,
            written,
            lambda session, batch: self._commit(session, batch, pending),
            (self.db, mid_sha256, ctx.raw_sha256),
            core_only=True,
        )

    def _look_up(self, reads: Reads, ctx: Context, mid_sha256: str) -> Duplicate | _LookedUp:
        """The reads a message needs: a duplicate's reference, or its code and keys.

        A duplicate is answered before the code is looked at (its code may be
        spent or sealed by now).
        """
        existing = duplicate_of(reads, mid_sha256, ctx.raw_sha256)
        if existing is not None:
            return Duplicate(existing)
        claim = self._claim(ctx)
        now = self.clock()
        checked = self.verifier.check(reads, claim, now)
        encryptor = None
        if checked.verified is not None:
            encryptor = self.payload.encryptors.for_court(reads, checked.verified.court_id)
        return _LookedUp(claim, now, checked, encryptor)

    @staticmethod
    def _claim(ctx: Context) -> CodeClaim:
        return claim_of(
            ctx.inbound.recipient.tag,
            ctx.parsed.subject,
            ctx.verdict.from_address.key,
            ctx.throttle_keys,
            actor_of(ctx),
        )

    def _check_documents(self, attachments: Sequence[Attachment]) -> list[CheckedDocument]:
        return checked_documents(self.policy, attachments)

    def _commit(self, session: Session, batch: Batch, pending: _Pending) -> Outcome:
        """One message's rows, in a savepoint of the group commit's transaction.

        Runs in the single writer thread: its cost bounds how many messages per
        second one writer commits, so the rows go through prebuilt statements,
        Core only (`writes_of`: on SQLite the driver's connection, and the
        savepoint the driver's own).
        """
        now = self.clock()
        ctx, verified = pending.ctx, pending.admitted.verified
        self.verifier.codes.consume(session, verified.code_id, now)
        # Counting the submission also takes the request's row lock (PostgreSQL).
        request_reference, number = RequestRepository(session).count_submission(
            verified.request_id, now
        )
        filing = Filing(
            request_reference=request_reference,
            submission_reference=f"{request_reference}/{number}",
            court=verified.court_code,
            measure=pending.registration.measure,
            kind=verified.request_kind,
            sender_address=pending.registration.address,
            registration_id=pending.registration.id,
            court_name=verified.court_name,
        )
        manifest = submission_manifest(filing, self._arrival(ctx, verified), pending.documents)
        written = pending.written  # the manifest joins it: discarded too if the batch fails
        written.append(
            self.payload.write_manifest(pending.admitted.encryptor, encode(manifest), batch)
        )
        self.payload.make_durable(batch, written)
        submission_id = SubmissionRepository(session).add(
            self._submission_row(pending, filing, number, written),
            written,
            document_rows(pending.documents, written[1:-1]),
            now,
        )
        queue_receipt(
            session, filing, pending.documents, ctx.inbound.received_at, ctx.raw_sha256, now
        )
        append_event(
            session,
            now,
            "message.accepted",
            actor=actor_of(ctx),
            subject=filing.submission_reference,
            data={
                "raw_sha256": ctx.raw_sha256,
                "documents": len(pending.documents),
                "dkim": ctx.verdict.dkim_result,
                "submission": submission_id,
            },
        )
        return Outcome(Action.SUBMITTED, filing.submission_reference)

    @staticmethod
    def _arrival(ctx: Context, verified: VerifiedCode) -> Arrival:
        return Arrival(
            channel=ctx.inbound.channel.value,
            received_at=ctx.inbound.received_at,
            authentication={
                **ctx.auth_results(),
                "code_id": verified.code_id,
                "credential_id": None,
            },
            parsed=ctx.parsed,
            raw_sha256=ctx.raw_sha256,
        )

    @staticmethod
    def _submission_row(
        pending: _Pending, filing: Filing, number: int, written: Sequence[StoredBlob]
    ) -> NewSubmission:
        ctx = pending.ctx
        return NewSubmission(
            reference=filing.submission_reference,
            request_id=pending.admitted.verified.request_id,
            number=number,
            channel=ctx.inbound.channel.value,
            message_id_sha256=pending.mid_sha256,
            raw_sha256=ctx.raw_sha256,
            size=len(ctx.inbound.raw),
            received_at=ctx.inbound.received_at,
            registration_id=pending.registration.id,
            credential_id=ctx.inbound.credential_id,
            auth_results=ctx.auth_results(),
            raw_blob=written[0].key,
            manifest_blob=written[-1].key,
        )


# -- the steps every submitting role shares (depot@, and teletransmission) -------
def checked_documents(
    policy: DocumentPolicy, attachments: Sequence[Attachment]
) -> list[CheckedDocument]:
    documents = check_documents(
        policy, [(a.filename, a.declared_type, a.content) for a in attachments]
    )
    for document, attachment in zip(documents, attachments, strict=True):
        assert document.size == len(attachment.content)
    return documents


def write_payload(
    payload: PayloadWriter,
    disk_reserve: int,
    encryptor: Encryptor,
    raw: bytes,
    attachments: Sequence[Attachment],
) -> list[StoredBlob]:
    """The raw message and each document, encrypted and written; refused below the reserve."""
    if payload.free_bytes() < disk_reserve + 2 * len(raw):
        raise DiskFull("insufficient system storage")
    return payload.write_message(encryptor, raw, [a.content for a in attachments])


def queue_commit(
    committer: GroupCommitter,
    payload: PayloadWriter,
    written: list[StoredBlob],
    work: Work[Outcome],
    duplicate: tuple[Database, str, str],
    *,
    core_only: bool = False,
) -> PendingCommit:
    """Queue the rows for the group commit; if that fails, `settle` removes the blobs.

    The same message committed meanwhile (a client retry racing us) is
    answered with the reference it got.  When the commit's own answer was
    lost (`CommitUncertain`) the rows may be stored: the blobs stay, for the
    retry to find (or for the blob sweep, if no row names them).
    `duplicate` is where and under which (Message-ID, raw) SHA-256 to look;
    `core_only` as `GroupCommitter.submit` takes it.
    """
    try:
        committed = committer.submit(work, core_only=core_only)
    except BaseException:
        payload.discard(written)
        raise

    def settle(error: Exception) -> Outcome:
        if isinstance(error, CommitUncertain):
            raise error
        payload.discard(written)
        if isinstance(error, AlreadyStored):
            db, mid_sha256, raw_sha256 = duplicate
            with db.read_connection() as reads:
                existing = duplicate_of(reads, mid_sha256, raw_sha256)
            if existing is not None:
                return Outcome(Action.SUBMITTED, existing, duplicate=True)
        raise error

    return PendingCommit(committed, settle)


def queue_receipt(
    session: Session,
    filing: Filing,
    documents: Sequence[CheckedDocument],
    received_at: datetime,
    raw_sha256: str,
    now: datetime,
) -> None:
    """The receipt's outbox row, committed with the submission it acknowledges."""
    lines = [DocumentLine(d.filename, d.size, d.sha256) for d in documents]
    values = {
        "court": filing.court,
        "court_name": filing.court_name,
        "measure": filing.measure,
        "request_reference": filing.request_reference,
        "submission_reference": filing.submission_reference,
        "received_at": format_utc(received_at),
        "documents": format_documents(lines),
        "message_sha256": raw_sha256,
        "documents_json": documents_json(lines),
    }
    # In the group commit's batch, written with the batch's other receipts in one statement.
    enqueue_later(session, kind="receipt", recipient=filing.sender_address, values=values,
                  now=now, related_reference=filing.submission_reference)  # fmt: skip


def document_rows(
    documents: Sequence[CheckedDocument], blobs: Sequence[StoredBlob]
) -> list[DocumentRow]:
    return [
        DocumentRow(d.index, d.detected_type, d.size, d.sha256, blob.key, tuple(d.warnings))
        for d, blob in zip(documents, blobs, strict=True)
    ]


def actor_of(ctx: Context) -> str:
    """The audit actor of a message: its channel and its sender's address."""
    return f"{ctx.inbound.channel.value}:{ctx.verdict.from_address.key}"
