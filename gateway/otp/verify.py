"""Verifying the code a message carries: find it, check it, record a failure or seal on expiry.

depot@ and etat@ both need a live code of the sender's.  Checking only
reads (so a submission can do it in the same read transaction as its other
look-ups); `settle` then writes what a refusal leaves behind — a failure
counted against the sender, or the request sealed when its code expired —
in its own short transaction, and raises the refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.errors import CodeError, CodeExpired, CodeMissing
from gateway.otp.codes import find_code_in_subject, normalise_code
from gateway.otp.service import CodeService
from gateway.storage.audit import append_event
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.models import Code, Court, Request
from gateway.storage.registrations import ActiveRegistration
from gateway.storage.requests import CodeRepository, RequestRepository


@dataclass(frozen=True, slots=True)
class CodeClaim:
    """Who presents which code, as the pipeline learnt it."""

    canonical: str | None
    """The code in canonical form, or None when the message carries none."""
    sender_key: str
    registrations: Sequence[ActiveRegistration]
    throttle_keys: list[str]
    actor: str


def claim_of(
    tag: str,
    subject: str,
    sender_key: str,
    registrations: Sequence[ActiveRegistration],
    throttle_keys: list[str],
    actor: str,
) -> CodeClaim:
    """The code of a message: its sub-address (`depot+CODE@`) first, then its subject."""
    canonical = (normalise_code(tag) if tag else None) or find_code_in_subject(subject)
    return CodeClaim(canonical, sender_key, registrations, throttle_keys, actor)


@dataclass(frozen=True, slots=True)
class VerifiedCode:
    """A live code of the sender's, with its request and court (detached rows)."""

    code: Code
    request: Request
    court: Court

    @property
    def registration_id(self) -> int:
        return self.code.registration_id


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """What reading a code found: the live code, or why it cannot be used."""

    verified: VerifiedCode | None = None
    failure: CodeError | None = None
    expired_code_id: int | None = None
    """The code to seal when the failure is its expiry."""


class CodeVerifier:
    """Checks codes (reads only) and settles refusals (one short write each)."""

    def __init__(self, db: Database, codes: CodeService) -> None:
        self.db = db
        self.codes = codes

    def verify(self, claim: CodeClaim, now: datetime) -> VerifiedCode:
        """Check in a read transaction of its own, then settle."""
        if claim.canonical is None:
            raise CodeMissing("no code found in the subject or the address")
        with self.db.reading() as session:
            checked = self.check(session, claim, now)
            session.expunge_all()
        return self.settle(checked, claim, now)

    def check(self, session: Session, claim: CodeClaim, now: datetime) -> CodeCheck:
        """Read and check the code in the caller's read transaction."""
        if claim.canonical is None:
            return CodeCheck(failure=CodeMissing("no code found in the subject or the address"))
        try:
            self.codes.check_not_locked(session, claim.throttle_keys, now)
            code, request = self.codes.find(
                session, claim.canonical, claim.sender_key, list(claim.registrations)
            )
        except CodeError as exc:
            return CodeCheck(failure=exc)
        try:
            self.codes.check_usable(code, request, now)
        except CodeExpired as exc:
            return CodeCheck(failure=exc, expired_code_id=code.id)
        except CodeError as exc:
            return CodeCheck(failure=exc)
        court = CourtRepository(session).get(request.court_id)
        assert court is not None
        return CodeCheck(VerifiedCode(code, request, court))

    def settle(self, checked: CodeCheck, claim: CodeClaim, now: datetime) -> VerifiedCode:
        """The live code, or the refusal recorded in its own write and raised."""
        if checked.verified is not None:
            return checked.verified
        failure = checked.failure
        assert failure is not None
        if checked.expired_code_id is not None:
            self._seal(checked.expired_code_id, now)  # an expired code seals its request
        elif not isinstance(failure, CodeMissing):
            self._record_failure(claim, failure, now)
        raise failure

    def _record_failure(self, claim: CodeClaim, failure: CodeError, now: datetime) -> None:
        with self.db.transaction() as session:
            self.codes.record_failure(session, claim.throttle_keys, now)
            append_event(
                session,
                now,
                "code.failed",
                actor=claim.actor,
                data={"reason": type(failure).__name__},
            )

    def _seal(self, code_id: int, now: datetime) -> None:
        """An expired code seals its request (if the sweeper has not done it yet)."""
        with self.db.transaction() as session:
            code = CodeRepository(session).get(code_id)
            assert code is not None
            request = RequestRepository(session).get(code.request_id, for_update=True)
            if request is not None and request.status == "open":
                self.codes.close(code, request, now)
