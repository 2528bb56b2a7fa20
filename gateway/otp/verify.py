"""Verifying the code a message carries: find it, check it, record a failure or seal on expiry.

depot@ and etat@ both need a live code of the sender's.  Checking only
reads (a message does it in the pipeline's read transaction, with its other
look-ups); `settle` then writes what a refusal leaves behind — a failure
counted against the sender, or the request sealed when its code expired —
in its own short transaction, and raises the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.errors import CodeError, CodeExpired, CodeMissing
from gateway.otp.codes import find_code_in_subject, normalise_code
from gateway.otp.service import CodeService
from gateway.storage.audit import append_event
from gateway.storage.db import Database, Reads
from gateway.storage.registrations import ActiveRegistration
from gateway.storage.requests import CodeRepository, CodeRow, RequestRepository


@dataclass(frozen=True, slots=True)
class CodeClaim:
    """Who presents which code, as the pipeline learnt it."""

    canonical: str | None
    """The code in canonical form, or None when the message carries none."""
    sender_key: str
    throttle_keys: list[str]
    actor: str


def claim_of(
    tag: str,
    subject: str,
    sender_key: str,
    throttle_keys: list[str],
    actor: str,
) -> CodeClaim:
    """The code of a message: its sub-address (`depot+CODE@`) first, then its subject."""
    canonical = (normalise_code(tag) if tag else None) or find_code_in_subject(subject)
    return CodeClaim(canonical, sender_key, throttle_keys, actor)


@dataclass(frozen=True, slots=True)
class VerifiedCode:
    """A live code of the sender's: what a message needs of it, its request, its court and
    the sender's registration it is bound to."""

    code_id: int
    registration_id: int
    request_id: int
    request_reference: str
    request_kind: str
    court_id: int
    court_code: str
    court_name: str
    registration: ActiveRegistration

    @classmethod
    def of(cls, code: CodeRow) -> VerifiedCode:
        assert code.registration is not None  # `CodeService.find` refused it otherwise
        return cls(
            code.id, code.registration_id, code.request_id, code.request_reference,
            code.request_kind, code.court_id, code.court_code, code.court_name,
            code.registration,
        )  # fmt: skip


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

    def check(self, reads: Reads, claim: CodeClaim, now: datetime) -> CodeCheck:
        """Read and check the code in the caller's read transaction (Core reads, plain rows)."""
        if claim.canonical is None:
            return CodeCheck(failure=CodeMissing("no code found in the subject or the address"))
        try:
            self.codes.check_not_locked(reads, claim.throttle_keys, now)
            code = self.codes.find(reads, claim.canonical, claim.sender_key)
        except CodeError as exc:
            return CodeCheck(failure=exc)
        try:
            self.codes.check_usable(code, now)
        except CodeExpired as exc:
            return CodeCheck(failure=exc, expired_code_id=code.id)
        except CodeError as exc:
            return CodeCheck(failure=exc)
        return CodeCheck(VerifiedCode.of(code))

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
