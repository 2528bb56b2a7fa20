"""Checking a login and password at SMTP AUTH: the credential, its software, the throttle.

Blocking (a database read and an argon2id verification): the SMTP side
runs `authenticate` in a worker thread.  Wrong secrets are counted against
the claimed address and the client IP; after `max_failures` of either, the
key is locked for `lockout`, doubling at each new lock-out, and even a good
secret is refused meanwhile.  Every attempt is audited; the secret never is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.credentials.tokens import CredentialHasher, lookup_id_of
from gateway.errors import AuthLocked, CredentialInvalid, CredentialRefused, InvalidAddress
from gateway.model import Clock, Mailbox
from gateway.storage.audit import append_event
from gateway.storage.credentials import (
    CredentialRepository,
    CredentialState,
    SoftwareRepository,
    credential_state,
)
from gateway.storage.db import Database, Reads, Session
from gateway.storage.models import Credential
from gateway.storage.throttles import ThrottleRepository

FAILURE_WINDOW = timedelta(hours=24)
MAX_DELAY = 30.0
"""Seconds: the longest wait before a failure is answered, whatever the count."""
INVALID = "authentication credentials invalid"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    max_failures: int
    lockout: timedelta
    failure_delay: timedelta


@dataclass(frozen=True, slots=True)
class Identity:
    """Who an AUTH proved to be: what the pipeline gets with every message of the session."""

    credential_id: int
    address_key: str
    software: str


@dataclass(frozen=True, slots=True)
class _Login:
    """A login attempt: the claimed address (None if not one) and the client."""

    mailbox: Mailbox | None
    peer_ip: str

    @property
    def keys(self) -> list[str]:
        """Throttle keys (apart from the codes' ones); a long address is hashed to fit."""
        keys = [f"auth-ip:{self.peer_ip}"]
        if self.mailbox is not None:
            address = self.mailbox.key
            if len(address) > 180:
                address = hashlib.sha256(address.encode()).hexdigest()
            keys.insert(0, f"auth-addr:{address}")
        return keys

    @property
    def actor(self) -> str:
        return f"teletransmission:{self.peer_ip}"

    @property
    def subject(self) -> str:
        return self.mailbox.key[:200] if self.mailbox else ""  # the audit column's size


class CredentialVerifier:
    """Turns (login, password, client IP) into an Identity, or raises the refusal."""

    def __init__(
        self, db: Database, hasher: CredentialHasher, policy: AuthPolicy, clock: Clock
    ) -> None:
        self.db = db
        self.hasher = hasher
        self.policy = policy
        self.clock = clock

    def authenticate(self, login: str, password: str, peer_ip: str) -> Identity:
        attempt = _Login(_mailbox(login), peer_ip)
        now = self.clock()
        with self.db.reading() as session:
            locked = ThrottleRepository(session).any_locked(attempt.keys, now)
            lookup_id = lookup_id_of(password)
            credential = None
            if not locked and lookup_id is not None:
                credential = CredentialRepository(session).by_lookup_id(lookup_id)
            software_live = credential is not None and _software_live(session, credential)
            session.expunge_all()
        if locked:
            self._audit(attempt, "locked", None, now)
            raise AuthLocked("too many failed authentications, try again later")
        if credential is None:
            self.hasher.burn(password)  # as long as a wrong secret takes
            raise self._failure(attempt, "unknown credential", None, now)
        if not self.hasher.verify(credential.secret_hash, password):
            raise self._failure(attempt, "wrong secret", credential.id, now)
        if attempt.mailbox is None or attempt.mailbox.key != credential.address_key:
            raise self._failure(attempt, "another address", credential.id, now)
        # The secret is right: saying why it no longer works tells its holder only.
        refusal = _why_not_live(credential, software_live, now)
        if refusal:
            self._audit(attempt, refusal, credential.id, now)
            raise CredentialInvalid(f"{INVALID}: {refusal}")
        self._succeed(attempt, credential, password, now)
        return Identity(credential.id, credential.address_key, credential.software)

    def _failure(
        self, attempt: _Login, reason: str, credential_id: int | None, now: datetime
    ) -> CredentialInvalid:
        """Count a wrong guess against each key (locking at the limit) and audit it."""
        with self.db.transaction() as session:
            count = self._count(session, attempt.keys, now)
            append_event(
                session, now, "credential.auth_failed", actor=attempt.actor,
                subject=attempt.subject, data={"reason": reason, "credential": credential_id},
            )  # fmt: skip
        base = self.policy.failure_delay.total_seconds()
        return CredentialInvalid(INVALID, delay=min(base * 2 ** max(count - 1, 0), MAX_DELAY))

    def _count(self, session: Session, keys: list[str], now: datetime) -> int:
        """One more failure on each key; returns the highest count (before a lock resets it)."""
        throttles = ThrottleRepository(session)
        highest = 0
        for key in keys:
            row = throttles.locked_row(key, now)
            if now - row.window_started_at > FAILURE_WINDOW:
                row.failures, row.window_started_at = 0, now
            row.failures += 1
            highest = max(highest, row.failures)
            if row.failures >= self.policy.max_failures:
                row.locked_until = now + self.policy.lockout * (2 ** min(row.lockouts, 10))
                row.lockouts, row.failures = row.lockouts + 1, 0
        return highest

    def _succeed(
        self, attempt: _Login, credential: Credential, password: str, now: datetime
    ) -> None:
        """Record the use; a hash made with older parameters is redone with today's."""
        new_hash = None
        if self.hasher.needs_rehash(credential.secret_hash):
            new_hash = self.hasher.hash(password)
        with self.db.transaction() as session:
            CredentialRepository(session).record_use(credential.id, now, new_hash)
            append_event(
                session, now, "credential.authenticated", actor=attempt.actor,
                subject=f"credential:{credential.id}", data={"software": credential.software},
            )  # fmt: skip

    def _audit(
        self, attempt: _Login, reason: str, credential_id: int | None, now: datetime
    ) -> None:
        with self.db.transaction() as session:
            append_event(
                session, now, "credential.auth_refused", actor=attempt.actor,
                subject=attempt.subject, data={"reason": reason, "credential": credential_id},
            )  # fmt: skip


def _mailbox(login: str) -> Mailbox | None:
    try:
        return Mailbox.parse(login)
    except InvalidAddress:
        return None


def software_in_use(reads: Reads, credential_id: int, now: datetime) -> str:
    """The software of a credential still usable now, read in the caller's transaction.

    Raises CredentialRefused otherwise: a session authenticated before a
    revocation must not file after it.
    """
    state = credential_state(reads, credential_id)
    refusal = (
        _why_not_live(state, state.software_live, now)
        if state is not None
        else "credential unknown"
    )
    if refusal or state is None:
        raise CredentialRefused(f"credential no longer valid: {refusal}")
    return state.software


def _software_live(session: Session, credential: Credential) -> bool:
    software = SoftwareRepository(session).by_name(credential.software)
    return software is not None and software.revoked_at is None


def _why_not_live(
    credential: Credential | CredentialState, software_live: bool, now: datetime
) -> str:
    if credential.revoked_at is not None:
        return "credential revoked"
    if credential.expires_at <= now:
        return "credential expired"
    if not software_live:
        return "software no longer homologated"
    return ""
