"""Teletransmission: one authenticated message on the submission port becomes one sealed request.

The sender proved who it is with SMTP AUTH (a credential, `credentials`):
no code.  Subject `DEPOT <court> <measure> [kind]`; the credential's
address must be actively registered for that court and measure.  From
there it is depot@'s path (`ingest.submit`): the documents policy,
encryption to the court's keys and blob writing, then in one group-commit
unit the request opened and sealed, the submission, its receipt and its
audit line.  An optional `depot.json` (`ingest.filing`) goes into the
manifest.  Exactly once: the same Message-ID and bytes answer the first
reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.credentials.verify import software_in_use
from gateway.errors import CredentialRefused, SenderNotRegistered
from gateway.ingest.codereq import parse_filing_command
from gateway.ingest.documents import CheckedDocument, DocumentPolicy
from gateway.ingest.filing import check_filing, split_filing_part
from gateway.ingest.manifest import Arrival, Filing, encode, submission_manifest
from gateway.ingest.mime import filing_attachments
from gateway.ingest.pipeline import Action, Context, Outcome, PendingCommit, read_alone
from gateway.ingest.submit import (
    Duplicate,
    actor_of,
    checked_documents,
    document_rows,
    message_id_hash,
    queue_commit,
    queue_receipt,
    write_payload,
)
from gateway.metrics import Observe, no_observe, timed
from gateway.model import Channel, Clock, RequestKind
from gateway.storage.audit import append_event
from gateway.storage.courts import court_by_code
from gateway.storage.crypto import Encryptor
from gateway.storage.db import Database, Reads, Session
from gateway.storage.groupcommit import Batch, GroupCommitter
from gateway.storage.payload import PayloadWriter
from gateway.storage.registrations import ActiveRegistration, active_for_measure
from gateway.storage.requests import RequestRepository
from gateway.storage.submissions import (
    NewSubmission,
    StoredBlob,
    SubmissionRepository,
    duplicate_of,
)

USAGE = "subject must be: DEPOT <court> <measure> [requete|compte|inventaire]"


@dataclass(frozen=True, slots=True)
class _Filed:
    """What the Subject asks for, and what the database says of it."""

    court: str
    measure: str
    kind: RequestKind
    registration: ActiveRegistration
    encryptor: Encryptor
    software: str
    court_name: str


@dataclass(frozen=True, slots=True)
class _Pending:
    """A filing written to the blob store, waiting for its rows to commit."""

    ctx: Context
    credential_id: int
    filed: _Filed
    documents: Sequence[CheckedDocument]
    filing_data: dict[str, Any] | None
    written: list[StoredBlob]
    mid_sha256: str


class TeletransmissionStore:
    """The submission port's role handler: one message, one request, sealed at once."""

    def __init__(
        self,
        *,
        db: Database,
        payload: PayloadWriter,
        policy: DocumentPolicy,
        disk_reserve: int,
        clock: Clock,
        committer: GroupCommitter,
        observe: Observe = no_observe,
    ) -> None:
        self.db = db
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
        """The filing's reads, in the pipeline's read transaction (`ReadsFirst`)."""
        credential_id = ctx.inbound.credential_id
        if credential_id is None:  # only the submission port hands messages here, after AUTH
            raise CredentialRefused("teletransmission needs an authenticated credential")
        asked = parse_filing_command(ctx.parsed.subject, "DEPOT", USAGE)
        mid_sha256 = message_id_hash(ctx.parsed.message_id)
        found = self._look_up(reads, ctx, credential_id, asked, mid_sha256)
        return functools.partial(self._file, ctx, credential_id, mid_sha256, found)

    def _file(
        self, ctx: Context, credential_id: int, mid_sha256: str, found: Duplicate | _Filed
    ) -> Outcome | PendingCommit:
        """After the read: documents, blobs and the group commit."""
        if isinstance(found, Duplicate):
            return Outcome(Action.SUBMITTED, found.reference, duplicate=True)
        court, measure, kind = found.court, found.measure, found.kind
        part, attachments = split_filing_part(filing_attachments(ctx.parsed))
        with timed(self.observe, "documents"):
            documents = checked_documents(self.policy, attachments)
            filing_data = None
            if part is not None:
                filing_data = check_filing(
                    part, court=court, measure=measure, kind=kind, documents=documents
                )
        written = write_payload(
            self.payload, self.disk_reserve, found.encryptor, ctx.inbound.raw, attachments
        )
        pending = _Pending(ctx, credential_id, found, documents, filing_data, written, mid_sha256)
        return queue_commit(
            self.committer,
            self.payload,
            written,
            lambda session, batch: self._commit(session, batch, pending),
            (self.db, mid_sha256, ctx.raw_sha256),
        )

    def _look_up(
        self,
        reads: Reads,
        ctx: Context,
        credential_id: int,
        asked: tuple[str, str, RequestKind],
        mid_sha256: str,
    ) -> Duplicate | _Filed:
        """The reads: a duplicate's reference, or the registration, the credential and the keys.

        A duplicate is answered first: a re-sent filing keeps its first reference.
        """
        court, measure, kind = asked
        existing = duplicate_of(reads, mid_sha256, ctx.raw_sha256)
        if existing is not None:
            return Duplicate(existing)
        software = software_in_use(reads, credential_id, self.clock())
        court_row = court_by_code(reads, court)
        registration = (
            None
            if court_row is None
            else active_for_measure(reads, ctx.verdict.from_address.key, court_row[0], measure)
        )
        if court_row is None or registration is None:
            raise SenderNotRegistered(
                f"{ctx.verdict.from_address.key} is not registered for {court} {measure}"
            )
        court_id, court_name = court_row
        encryptor = self.payload.encryptors.for_court(reads, court_id)
        return _Filed(court, measure, kind, registration, encryptor, software, court_name)

    def _commit(self, session: Session, batch: Batch, pending: _Pending) -> Outcome:
        """The request, opened and sealed, and its one submission: one savepoint of the batch."""
        now = self.clock()
        ctx, filed = pending.ctx, pending.filed
        request = RequestRepository(session).open_sealed(
            filed.registration, filed.court, filed.kind, Channel.TELETRANSMISSION, now
        )
        filing = Filing(
            request_reference=request.reference,
            submission_reference=f"{request.reference}/1",
            court=filed.court,
            measure=filed.registration.measure,
            kind=filed.kind.value,
            sender_address=filed.registration.address,
            registration_id=filed.registration.id,
            court_name=filed.court_name,
        )
        manifest = submission_manifest(
            filing, self._arrival(pending), pending.documents, pending.filing_data
        )
        written = pending.written  # the manifest joins it: discarded too if the batch fails
        written.append(self.payload.write_manifest(filed.encryptor, encode(manifest), batch))
        self.payload.make_durable(batch, written)
        submission_id = SubmissionRepository(session).add(
            self._submission_row(pending, filing, request.id, written),
            written,
            document_rows(pending.documents, written[1:-1]),
            now,
        )
        queue_receipt(
            session, filing, pending.documents, ctx.inbound.received_at, ctx.raw_sha256, now
        )
        append_event(
            session, now, "message.accepted", actor=actor_of(ctx),
            subject=filing.submission_reference,
            data={"raw_sha256": ctx.raw_sha256, "documents": len(pending.documents),
                  "dkim": ctx.verdict.dkim_result, "submission": submission_id,
                  "credential": pending.credential_id,
                  "filing_data": pending.filing_data is not None},
        )  # fmt: skip
        return Outcome(Action.SUBMITTED, filing.submission_reference)

    @staticmethod
    def _authentication(pending: _Pending) -> dict[str, Any]:
        return {
            **pending.ctx.auth_results(),
            "code_id": None,
            "credential_id": pending.credential_id,
            "software": pending.filed.software,
        }

    def _arrival(self, pending: _Pending) -> Arrival:
        ctx = pending.ctx
        return Arrival(
            channel=ctx.inbound.channel.value,
            received_at=ctx.inbound.received_at,
            authentication=self._authentication(pending),
            parsed=ctx.parsed,
            raw_sha256=ctx.raw_sha256,
        )

    def _submission_row(
        self, pending: _Pending, filing: Filing, request_id: int, written: Sequence[StoredBlob]
    ) -> NewSubmission:
        ctx = pending.ctx
        return NewSubmission(
            reference=filing.submission_reference,
            request_id=request_id,
            number=1,
            channel=ctx.inbound.channel.value,
            message_id_sha256=pending.mid_sha256,
            raw_sha256=ctx.raw_sha256,
            size=len(ctx.inbound.raw),
            received_at=ctx.inbound.received_at,
            registration_id=filing.registration_id,
            credential_id=pending.credential_id,
            auth_results=self._authentication(pending),
            raw_blob=written[0].key,
            manifest_blob=written[-1].key,
        )
