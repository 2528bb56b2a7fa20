"""Codes against the database: open requests with new codes, check, consume, throttle, seal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.errors import CodeExpired, CodeLocked, CodeMismatch, CodeUnknown, RequestClosed
from gateway.model import Channel, RequestKind, RequestStatus
from gateway.otp.codes import CodeHasher, generate_code
from gateway.storage.db import Reads, Session
from gateway.storage.models import Code, Registration, Request
from gateway.storage.requests import CodeRepository, CodeRow, RequestRepository, code_by_hmac
from gateway.storage.throttles import ThrottleRepository, any_locked

RandBytes = Callable[[int], bytes]
FAILURE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class CodePolicy:
    ttl: timedelta
    max_failures: int
    lockout: timedelta
    max_requests_per_day: int


@dataclass(frozen=True, slots=True)
class IssuedCode:
    request: Request
    code: str
    """The canonical code: it goes into the outbox mail and nowhere else."""
    expires_at: datetime


class CodeService:
    """Issues and verifies numéros de saisie; failures throttle the sender."""

    def __init__(
        self, hasher: CodeHasher, policy: CodePolicy, randbytes: RandBytes | None = None
    ) -> None:
        self.hasher = hasher
        self.policy = policy
        self._randbytes = randbytes

    # -- issuing ----------------------------------------------------------
    def recent_issues(self, session: Session, registration_id: int, now: datetime) -> int:
        return CodeRepository(session).issued_since(registration_id, now - timedelta(days=1))

    def issue(
        self,
        session: Session,
        registration: Registration,
        court_code: str,
        kind: RequestKind,
        now: datetime,
    ) -> IssuedCode:
        """Open a request for the registration and bind a fresh code to it."""
        request = RequestRepository(session).open(
            registration, court_code, kind, Channel.SMTP, now
        )
        code = generate_code() if self._randbytes is None else generate_code(self._randbytes)
        expires_at = now + self.policy.ttl
        CodeRepository(session).add(
            Code(
                code_hmac=self.hasher.digest(code),
                request_id=request.id,
                registration_id=registration.id,
                issued_at=now,
                expires_at=expires_at,
                use_count=0,
            )
        )
        return IssuedCode(request, code, expires_at)

    # -- verifying --------------------------------------------------------
    def check_not_locked(self, reads: Reads, keys: list[str], now: datetime) -> None:
        if any_locked(reads, keys, now):
            raise CodeLocked("too many failed codes; try again later")

    def find(self, reads: Reads, canonical: str, sender_key: str) -> CodeRow:
        """The code with its request, court and registration, if it is bound to an active
        registration of the sender's; raises the refusal."""
        code = code_by_hmac(reads, self.hasher.digest(canonical), sender_key)
        if code is None:
            raise CodeUnknown("code is not valid")
        if code.registration is None:
            raise CodeMismatch("code does not belong to this sender")
        return code

    def check_usable(self, code: CodeRow, now: datetime) -> None:
        if code.expires_at <= now:
            raise CodeExpired("code has expired; ask for a new one")
        if code.closed_at is not None or code.request_status != RequestStatus.OPEN.value:
            raise RequestClosed("request is closed; ask for a new code")

    def consume(self, session: Session, code_id: int, now: datetime) -> None:
        """Count one use with a conditional UPDATE, so a code sealed meanwhile cannot pass."""
        if not CodeRepository(session).consume(code_id, now):
            raise RequestClosed("request is closed; ask for a new code")

    @staticmethod
    def close(code: Code, request: Request, now: datetime) -> None:
        """Seal the request and close its code (rows loaded in the caller's transaction)."""
        code.closed_at = code.closed_at or now
        request.status = RequestStatus.SEALED.value
        request.sealed_at = request.updated_at = now

    # -- throttling -------------------------------------------------------
    def record_failure(self, session: Session, keys: list[str], now: datetime) -> bool:
        """Count a wrong code against each key; returns True when one got locked."""
        locked = False
        throttles = ThrottleRepository(session)
        for key in keys:
            row = throttles.locked_row(key, now)
            if now - row.window_started_at > FAILURE_WINDOW:
                row.failures, row.window_started_at = 0, now
            row.failures += 1
            if row.failures >= self.policy.max_failures:
                # Each new lock-out lasts twice as long as the one before.
                row.locked_until = now + self.policy.lockout * (2 ** min(row.lockouts, 10))
                row.lockouts += 1
                row.failures = 0
                locked = True
        return locked


def seal_expired(session: Session, now: datetime) -> list[str]:
    """Seal open requests whose code has expired; returns their references."""
    rows = RequestRepository(session).expired_open(now)
    for request, code in rows:
        CodeService.close(code, request, now)
    return [request.reference for request, _ in rows]
