"""Codes against the database: open requests with new codes, verify, consume, throttle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.errors import CodeExpired, CodeLocked, CodeMismatch, CodeUnknown, RequestClosed
from gateway.model import Channel, RequestKind, RequestStatus
from gateway.otp.codes import CodeHasher, generate_code
from gateway.storage.models import (
    Code,
    Registration,
    Request,
    RequestCounter,
    Throttle,
    table_of,
)

RandBytes = Callable[[int], bytes]
FAILURE_WINDOW = timedelta(hours=24)

CODES, THROTTLES = table_of(Code), table_of(Throttle)
# Statements built once: they run for every message with a code.
CODE_BY_HASH = select(Code).where(Code.code_hmac == bindparam("hmac"))
LOCKED_KEYS = (
    select(THROTTLES.c.key)
    .where(
        THROTTLES.c.key.in_(bindparam("keys", expanding=True)),
        THROTTLES.c.locked_until > bindparam("now"),
    )
    .limit(1)
)
CONSUME_CODE = (
    update(CODES)
    .where(
        CODES.c.id == bindparam("code_id"),
        CODES.c.expires_at > bindparam("now"),
        CODES.c.closed_at.is_(None),
    )
    .values(use_count=CODES.c.use_count + 1, last_used_at=bindparam("used_at"))
)


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


def open_request(
    session: Session,
    registration: Registration,
    court_code: str,
    kind: RequestKind,
    channel: Channel,
    now: datetime,
) -> Request:
    """Create a request with the next reference <COURT>-<YYYY>-<NNNNNN>."""
    number = _next_number(session, registration.court_id, now.year)
    request = Request(
        reference=f"{court_code}-{now.year:04d}-{number:06d}",
        court_id=registration.court_id,
        registration_id=registration.id,
        kind=kind.value,
        channel=channel.value,
        status=RequestStatus.OPEN.value,
        submission_count=0,
        opened_at=now,
        updated_at=now,
    )
    session.add(request)
    session.flush()
    return request


def _next_number(session: Session, court_id: int, year: int) -> int:
    # The counter row is locked for the rest of the transaction (FOR UPDATE on
    # PostgreSQL; SQLite transactions already hold the write lock).
    for _ in range(3):
        counter = session.get(RequestCounter, (court_id, year), with_for_update=True)
        if counter is not None:
            counter.last_number += 1
            return counter.last_number
        try:
            with session.begin_nested():
                session.add(RequestCounter(court_id=court_id, year=year, last_number=1))
            return 1
        except IntegrityError:
            continue  # another node created it first: lock it and increment
    raise RuntimeError("could not allocate a request number")


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
        return (
            session.scalar(
                select(func.count(Code.id)).where(
                    Code.registration_id == registration_id,
                    Code.issued_at > now - timedelta(days=1),
                )
            )
            or 0
        )

    def issue(
        self,
        session: Session,
        registration: Registration,
        court_code: str,
        kind: RequestKind,
        now: datetime,
    ) -> IssuedCode:
        """Open a request for the registration and bind a fresh code to it."""
        request = open_request(session, registration, court_code, kind, Channel.SMTP, now)
        code = generate_code() if self._randbytes is None else generate_code(self._randbytes)
        expires_at = now + self.policy.ttl
        session.add(
            Code(
                code_hmac=self.hasher.digest(code),
                request_id=request.id,
                registration_id=registration.id,
                issued_at=now,
                expires_at=expires_at,
                use_count=0,
            )
        )
        session.flush()
        return IssuedCode(request, code, expires_at)

    # -- verifying --------------------------------------------------------
    def check_not_locked(self, session: Session, keys: list[str], now: datetime) -> None:
        locked = session.connection().execute(LOCKED_KEYS, {"keys": keys, "now": now}).first()
        if locked is not None:
            raise CodeLocked("too many failed codes; try again later")

    def find(
        self, session: Session, canonical: str, sender_key: str, registrations: list[Registration]
    ) -> tuple[Code, Request]:
        """Look a code up and check it belongs to the sender; raises the refusal."""
        code = session.scalars(CODE_BY_HASH, {"hmac": self.hasher.digest(canonical)}).one_or_none()
        if code is None:
            raise CodeUnknown("code is not valid")
        if code.registration_id not in {r.id for r in registrations}:
            raise CodeMismatch("code does not belong to this sender")
        request = session.get(Request, code.request_id)
        assert request is not None
        return code, request

    def check_usable(self, code: Code, request: Request, now: datetime) -> None:
        if code.expires_at <= now:
            raise CodeExpired("code has expired; ask for a new one")
        if code.closed_at is not None or request.status != RequestStatus.OPEN.value:
            raise RequestClosed("request is closed; ask for a new code")

    def consume(self, session: Session, code: Code, now: datetime) -> None:
        """Count one use with a conditional UPDATE, so a code sealed meanwhile cannot pass."""
        result = session.connection().execute(
            CONSUME_CODE, {"code_id": code.id, "now": now, "used_at": now}
        )
        if result.rowcount != 1:
            raise RequestClosed("request is closed; ask for a new code")

    def close(self, session: Session, code: Code, request: Request, now: datetime) -> None:
        code.closed_at = now
        request.status = RequestStatus.SEALED.value
        request.sealed_at = request.updated_at = now

    # -- throttling -------------------------------------------------------
    def record_failure(self, session: Session, keys: list[str], now: datetime) -> bool:
        """Count a wrong code against each key; returns True when one got locked."""
        locked = False
        for key in keys:
            row = self._throttle_row(session, key, now)
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

    def _throttle_row(self, session: Session, key: str, now: datetime) -> Throttle:
        row = session.get(Throttle, key, with_for_update=True)
        if row is not None:
            return row
        try:
            with session.begin_nested():
                session.add(Throttle(key=key, failures=0, lockouts=0, window_started_at=now))
        except IntegrityError:
            pass
        row = session.get(Throttle, key, with_for_update=True, populate_existing=True)
        assert row is not None
        return row


def seal_expired(session: Session, now: datetime) -> list[str]:
    """Seal open requests whose code has expired; returns their references."""
    rows = session.execute(
        select(Request, Code)
        .join(Code, Code.request_id == Request.id)
        .where(Request.status == RequestStatus.OPEN.value, Code.expires_at <= now)
        .limit(500)
    ).all()
    for request, code in rows:
        request.status = RequestStatus.SEALED.value
        request.sealed_at = request.updated_at = now
        code.closed_at = code.closed_at or now
    return [request.reference for request, _ in rows]
