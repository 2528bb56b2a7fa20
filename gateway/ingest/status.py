"""etat@: mail back a request's state for a live code; CLOTURE seals the request early."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import datetime

from gateway.ingest.pipeline import Action, Context, Outcome, read_alone
from gateway.ingest.submit import actor_of
from gateway.model import Clock, fold_accents
from gateway.otp.verify import CodeCheck, CodeClaim, CodeVerifier, claim_of
from gateway.outbox.templates import STATUS_LABELS, DocumentLine, SubmissionLine, format_submissions
from gateway.storage.audit import append_event
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Reads, Session
from gateway.storage.outbox import enqueue
from gateway.storage.registrations import RegistrationRepository
from gateway.storage.requests import CodeRepository, RequestRepository
from gateway.storage.submissions import SubmissionRepository


def wants_closure(subject: str) -> bool:
    """CLOTURE as a word of the subject, in any case, with or without its accent (CLÔTURE)."""
    return "CLOTURE" in re.split(r"[^A-Z0-9]+", fold_accents(subject).upper())


def submission_lines(session: Session, request_id: int) -> list[SubmissionLine]:
    """The state reply's list; documents are named by index and type (names are encrypted)."""
    submissions = SubmissionRepository(session)
    return [
        SubmissionLine(
            submission.reference,
            submission.received_at,
            [
                DocumentLine(f"document {d.idx} ({d.detected_type})", d.size, d.sha256)
                for d in submissions.documents(submission.id)
            ],
        )
        for submission in submissions.of_request(request_id)
    ]


class StatusReporter:
    def __init__(self, db: Database, verifier: CodeVerifier, clock: Clock) -> None:
        self.db = db
        self.verifier = verifier
        self.clock = clock

    def __call__(self, ctx: Context) -> Outcome:
        """The whole role, its read in a transaction of its own."""
        return read_alone(self.db, self.read, ctx)

    def read(self, reads: Reads, ctx: Context) -> Callable[[], Outcome]:
        """The code check, in the pipeline's read transaction (`ReadsFirst`)."""
        claim = claim_of(
            ctx.inbound.recipient.tag,
            ctx.parsed.subject,
            ctx.verdict.from_address.key,
            ctx.throttle_keys,
            actor_of(ctx),
        )
        now = self.clock()
        checked = self.verifier.check(reads, claim, now)
        return functools.partial(self._report, ctx, claim, checked, now)

    def _report(self, ctx: Context, claim: CodeClaim, checked: CodeCheck, at: datetime) -> Outcome:
        """After the read: settle the code, then seal if asked and queue the state mail."""
        verified = self.verifier.settle(checked, claim, at)
        closing = wants_closure(ctx.parsed.subject)
        now = self.clock()
        with self.db.transaction() as session:
            live = RequestRepository(session).get(verified.request_id, for_update=True)
            live_code = CodeRepository(session).get(verified.code_id)
            registration = RegistrationRepository(session).get(verified.registration_id)
            assert live is not None and live_code is not None and registration is not None
            if closing and live.status == "open":
                self.verifier.codes.close(live_code, live, now)
                append_event(
                    session,
                    now,
                    "request.sealed",
                    actor=f"etat:{registration.id}",
                    subject=live.reference,
                    data={"by": "sender"},
                )
            court = CourtRepository(session).get(live.court_id)
            assert court is not None
            values = {
                "court_name": court.name,
                "reference": live.reference,
                "status": STATUS_LABELS.get(live.status, live.status),
                "submissions": format_submissions(submission_lines(session, live.id)),
            }
            enqueue(
                session,
                kind="state",
                recipient=registration.address,
                values=values,
                now=now,
                related_reference=live.reference,
            )
        return Outcome(Action.SEALED if closing else Action.STATE_SENT, live.reference)
