"""The greffe's review of a request: acknowledge, accept or reject it, with the guardian's notice.

    open ─┐
          ├─ acknowledge ─> received ─┬─ accept ─> accepted
    sealed┘                           └─ reject ─> rejected
    open, sealed ──────────── reject ─────────────> rejected

Each action is one transaction: the conditional status change (two clerks
cannot both move a request), the clerk's reason and per-document notes, the
notice in the outbox (an *avis d'enregistrement* on acknowledge, the
rejection notice on reject; accepting mails nothing) and the audit event
naming the actor.  Acknowledging or rejecting an open request also closes its
code: no message may join a request the greffe has taken up or refused.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import Conflict, InputError, NotFound, WrongStatus
from gateway.model import Clock, RequestStatus
from gateway.outbox.templates import (
    KIND_LABELS,
    DocumentLine,
    SubmissionLine,
    format_submissions,
    format_utc,
)
from gateway.storage.audit import append_event, lock_head
from gateway.storage.db import Database, Session
from gateway.storage.models import Court, Document, Registration, Request, Submission
from gateway.storage.outbox import enqueue
from gateway.storage.requests import CodeRepository, RequestRepository
from gateway.storage.submissions import SubmissionRepository

OPEN, SEALED = RequestStatus.OPEN.value, RequestStatus.SEALED.value
RECEIVED, ACCEPTED = RequestStatus.RECEIVED.value, RequestStatus.ACCEPTED.value
REJECTED = RequestStatus.REJECTED.value
REASON_MAX = 2000
NOTE_MAX = 1000
NOTE_KEY = re.compile(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,5})\s*")
"""A note's key: `<submission number>/<document index>`, both as receipts number them."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request as a review action left it."""

    reference: str
    court: str
    """The court's code."""
    status: str
    status_reason: str | None


@dataclass(frozen=True, slots=True)
class _Step:
    """One review action: from which statuses, to which, its audit action and its notice."""

    verb: str
    sources: tuple[str, ...]
    target: str
    action: str
    notice: str | None


ACKNOWLEDGE = _Step(
    "acknowledge", (OPEN, SEALED), RECEIVED, "request.acknowledged", "acknowledgement"
)
ACCEPT = _Step("accept", (RECEIVED,), ACCEPTED, "request.accepted", None)
# A clerk may refuse a filing without acknowledging it first.
REJECT = _Step("reject", (OPEN, SEALED, RECEIVED), REJECTED, "request.rejected", "rejection")


@dataclass(frozen=True, slots=True)
class _Filed:
    """One submission of the request and its documents (rows read in the transaction)."""

    submission: Submission
    documents: Sequence[Document]


@dataclass(frozen=True, slots=True)
class _Target:
    request: Request
    court: Court
    registration: Registration
    filed: Sequence[_Filed]


@dataclass(frozen=True, slots=True)
class _Note:
    key: str
    text: str
    submission: Submission
    document: Document


class ReviewDesk:
    """The greffe's actions on requests, shared by the CLI, the HTTP API and the console.

    `courts` limits an action to those court codes (a greffe's scope); None
    means every court (an administrator).  A reference outside the scope is
    answered exactly as an unknown one.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def acknowledge(
        self, reference: str, actor: str, *, courts: Collection[str] | None = None
    ) -> RequestView:
        """open or sealed -> received; mails the guardian an avis d'enregistrement."""
        return self._apply(ACKNOWLEDGE, reference, actor, courts)

    def accept(
        self, reference: str, actor: str, *, courts: Collection[str] | None = None
    ) -> RequestView:
        """received -> accepted (no mail: the decision itself reaches the guardian by the court)."""
        return self._apply(ACCEPT, reference, actor, courts)

    def reject(
        self,
        reference: str,
        actor: str,
        reason: str,
        *,
        notes: Mapping[str, str] | None = None,
        courts: Collection[str] | None = None,
    ) -> RequestView:
        """open, sealed or received -> rejected; mails the reason, the notes and what to do.

        `notes` maps `"<submission>/<document>"` (`"2/1"`: document 1 of
        submission `<reference>/2`) to the clerk's note on that document.
        """
        text = clean_text(reason, REASON_MAX, "reason")
        wanted = {
            _note_key(key): clean_text(note, NOTE_MAX, f"note {key}")
            for key, note in (notes or {}).items()
        }
        if len(wanted) != len(notes or {}):
            raise InputError("two notes name the same document")
        return self._apply(REJECT, reference, actor, courts, reason=text, notes=wanted)

    def _apply(
        self,
        step: _Step,
        reference: str,
        actor: str,
        courts: Collection[str] | None,
        *,
        reason: str | None = None,
        notes: Mapping[str, str] | None = None,
    ) -> RequestView:
        with self.db.transaction() as session:
            # The audit head first, as the group commit takes it: one lock order for
            # every writer that also locks request and code rows (PostgreSQL).
            lock_head(session)
            target = _load(session, reference, courts)
            request, previous = target.request, target.request.status
            _check_applies(step, request)
            resolved = _resolve_notes(notes or {}, target)
            now = self.clock()
            if previous == OPEN:
                CodeRepository(session).close_for_request(request.id, now)
            requests = RequestRepository(session)
            stored_notes = {note.key: note.text for note in resolved}
            if not requests.move(
                request.id, step.sources, step.target, now, reason=reason, notes=stored_notes
            ):
                # Another clerk moved it since we read it.
                current = requests.status_of(request.id) or "unknown"
                raise _wrong_status(step, request.reference, current)
            data: dict[str, object] = {"from": previous}
            if step.notice is not None:
                data["notice"] = _queue_notice(session, step, target, now, reason, resolved)
            if reason is not None:
                # The audit trail outlives retention: it keeps the reason's hash, not its text.
                data["reason_sha256"] = hashlib.sha256(reason.encode("utf-8")).hexdigest()
                data["notes"] = sorted(stored_notes)
            append_event(
                session, now, step.action, actor=actor, subject=request.reference, data=data
            )
        return RequestView(request.reference, target.court.code, step.target, reason)


def _queue_notice(
    session: Session,
    step: _Step,
    target: _Target,
    now: datetime,
    reason: str | None,
    notes: Sequence[_Note],
) -> int:
    """The guardian's notice, in the action's transaction; returns its outbox id."""
    if step.notice == "acknowledgement":
        values = acknowledgement_values(target, format_utc(now))
    else:
        assert reason is not None
        values = rejection_values(target, reason, notes)
    return enqueue(
        session,
        kind=str(step.notice),
        recipient=target.registration.address,
        values=values,
        now=now,
        related_reference=target.request.reference,
    )


def _load(session: Session, reference: str, courts: Collection[str] | None) -> _Target:
    found = RequestRepository(session).for_review(reference.strip().upper())
    scope = None if courts is None else {code.strip().upper() for code in courts}
    if found is None or (scope is not None and found[1].code not in scope):
        # The same answer for another court's request: a scope reveals nothing beyond it.
        raise NotFound(f"unknown request {' '.join(reference.split())[:60]}")
    request, court, registration = found
    submissions = SubmissionRepository(session)
    filed = [
        _Filed(sub, submissions.documents(sub.id)) for sub in submissions.of_request(request.id)
    ]
    return _Target(request, court, registration, filed)


def _check_applies(step: _Step, request: Request) -> None:
    if request.status not in step.sources:
        raise _wrong_status(step, request.reference, request.status)
    if request.submission_count == 0:
        raise Conflict(f"request {request.reference} has no submission: nothing to {step.verb}")


def _wrong_status(step: _Step, reference: str, current: str) -> WrongStatus:
    return WrongStatus(
        f"request {reference} is {current}; {step.verb} applies to a request that is "
        + " or ".join(step.sources),
        status=current,
    )


def _note_key(key: object) -> str:
    found = NOTE_KEY.fullmatch(str(key))
    if found is None:
        shown = " ".join(str(key).split())[:40]
        raise InputError(f"note key {shown!r}: expected <submission>/<document>, e.g. 2/1")
    return f"{int(found.group(1))}/{int(found.group(2))}"


def _resolve_notes(notes: Mapping[str, str], target: _Target) -> list[_Note]:
    """Each note with the document it names, in request order; an unknown one is refused."""
    documents = {
        f"{filed.submission.number}/{document.idx}": (filed.submission, document)
        for filed in target.filed
        for document in filed.documents
    }
    unknown = sorted(set(notes) - set(documents))
    if unknown:
        raise InputError(f"request {target.request.reference} has no document {', '.join(unknown)}")
    return [_Note(key, notes[key], *documents[key]) for key in documents if key in notes]


def clean_text(text: str, limit: int, what: str) -> str:
    """A clerk's text as it will be mailed: printable, lines trimmed, no runs of blank lines."""
    lines: list[str] = []
    for raw in str(text).splitlines():
        printable = "".join(ch for ch in raw if not unicodedata.category(ch).startswith("C"))
        line = " ".join(printable.split())
        if line or (lines and lines[-1]):
            lines.append(line)
    cleaned = "\n".join(lines).strip("\n")
    if not cleaned:
        raise InputError(f"{what} must not be empty")
    if len(cleaned) > limit:
        raise InputError(f"{what} is longer than {limit} characters")
    return cleaned


def _indented(text: str, indent: str) -> str:
    """Continuation lines under the first, for a value the template already indents."""
    return ("\n").join(
        (indent + line) if line and i else line for i, line in enumerate(text.split("\n"))
    )


def _document_label(document: Document) -> str:
    # Names are encrypted: a document is named by its index and type, as in the state reply.
    return f"document {document.idx} ({document.detected_type})"


def _common_values(target: _Target) -> dict[str, str]:
    return {
        "court": target.court.code,
        "court_name": target.court.name,
        "measure": target.registration.measure,
        "reference": target.request.reference,
    }


def acknowledgement_values(target: _Target, acknowledged_at: str) -> dict[str, str]:
    """The values of `acknowledgement.txt`."""
    lines = [
        SubmissionLine(
            filed.submission.reference,
            filed.submission.received_at,
            [DocumentLine(_document_label(d), d.size, d.sha256) for d in filed.documents],
        )
        for filed in target.filed
    ]
    kind = target.request.kind
    return {
        **_common_values(target),
        "kind": KIND_LABELS.get(kind, kind),
        "acknowledged_at": acknowledged_at,
        "submissions": format_submissions(lines),
    }


def rejection_values(target: _Target, reason: str, notes: Sequence[_Note]) -> dict[str, str]:
    """The values of `rejection.txt`: `$notes` is empty or a paragraph framed by blank lines."""
    blocks = [
        f"    Envoi {note.submission.reference}, {_document_label(note.document)}\n"
        f"      SHA-256 : {note.document.sha256}\n"
        f"      {_indented(note.text, '      ')}"
        for note in notes
    ]
    notes_block = ""
    if blocks:
        notes_block = "\nObservations sur les documents :\n\n" + "\n\n".join(blocks) + "\n"
    kind = target.request.kind
    code_request = f"CODE {target.court.code} {target.registration.measure}"
    return {
        **_common_values(target),
        "reason": _indented(reason, "    "),
        "notes": notes_block,
        "code_request": code_request if kind == "requete" else f"{code_request} {kind}",
    }
