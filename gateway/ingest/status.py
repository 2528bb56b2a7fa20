"""etat@: mail back a request's state for a live code; CLOTURE seals the request early."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.chain import append_event
from gateway.ingest.pipeline import Context, Outcome
from gateway.ingest.submit import SubmissionStore
from gateway.model import Clock, fold_accents
from gateway.outbox.queue import enqueue
from gateway.outbox.templates import STATUS_LABELS, DocumentLine, SubmissionLine, format_submissions
from gateway.storage.db import Database
from gateway.storage.models import Code, Document, Registration, Request, Submission


def wants_closure(subject: str) -> bool:
    """CLOTURE as a word of the subject, in any case, with or without its accent (CLÔTURE)."""
    return "CLOTURE" in re.split(r"[^A-Z0-9]+", fold_accents(subject).upper())


def submission_lines(session: Session, request_id: int) -> list[SubmissionLine]:
    """The state reply's list; documents are named by index and type (names are encrypted)."""
    lines = []
    submissions = session.scalars(
        select(Submission).where(Submission.request_id == request_id).order_by(Submission.number)
    ).all()
    for submission in submissions:
        documents = session.scalars(
            select(Document).where(Document.submission_id == submission.id).order_by(Document.idx)
        ).all()
        lines.append(
            SubmissionLine(
                submission.reference,
                submission.received_at,
                [
                    DocumentLine(f"document {d.idx} ({d.detected_type})", d.size, d.sha256)
                    for d in documents
                ],
            )
        )
    return lines


class StatusReporter:
    def __init__(self, db: Database, store: SubmissionStore, clock: Clock) -> None:
        self.db = db
        self.store = store
        self.clock = clock

    def handle(self, ctx: Context) -> Outcome:
        code, request, _court = self.store.verify_code(ctx)
        closing = wants_closure(ctx.parsed.subject)
        now = self.clock()
        with self.db.transaction() as session:
            live = session.get(Request, request.id, with_for_update=True)
            live_code = session.get(Code, code.id)
            registration = session.get(Registration, code.registration_id)
            assert live is not None and live_code is not None and registration is not None
            if closing and live.status == "open":
                self.store.codes.close(session, live_code, live, now)
                append_event(
                    session,
                    now,
                    "request.sealed",
                    actor=f"etat:{registration.id}",
                    subject=live.reference,
                    data={"by": "sender"},
                )
            values = {
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
        return Outcome("sealed" if closing else "state_sent", live.reference)
