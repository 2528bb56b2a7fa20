"""API keys: issue one (shown once), list, revoke, and authenticate a presented key.

A key reads ``gk_<lookup>_<secret>``: the lookup id is public (it names the
row, and `api-keys list` shows it), the secret is 160 random bits.  The
database keeps HMAC-SHA256 of both under the server secret, and the
comparison is constant-time, so neither a database dump nor a timing
measurement gives a usable key.  Failed attempts are counted per client
address (``gateway.storage.throttles``): past the limit the address is
locked out, with each lock-out twice as long as the one before, and every
failure is audited without the secret.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from gateway.errors import Conflict, InputError, NotFound, Throttled, Unauthenticated
from gateway.model import Clock, court_code
from gateway.storage.apikeys import ApiKeyRepository
from gateway.storage.audit import append_event
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.models import ApiKey
from gateway.storage.throttles import ThrottleRepository

RandBytes = Callable[[int], bytes]
PREFIX = "gk"
LOOKUP_BYTES = 10  # 16 base-32 characters
SECRET_BYTES = 20  # 160 bits, 32 base-32 characters
_KEY_RE = re.compile(r"gk_([a-z2-7]{16})_([a-z2-7]{32})")
_LOOKUP_RE = re.compile(r"gk_([a-z2-7]{16})_")
HASH_SCHEME = "hmac-sha256:"
_DUMMY_HASH = HASH_SCHEME + "0" * 64  # compared against when the lookup id is unknown


class Role(enum.StrEnum):
    ADMIN = "admin"
    GREFFE = "greffe"


class CourtScoped:
    """What a role and its courts let one see: an API key's principal, a console account."""

    __slots__ = ()
    role: Role
    courts: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def scope(self) -> frozenset[str] | None:
        """The courts this principal may see, or None for every court."""
        return None if self.is_admin else self.courts


@dataclass(frozen=True, slots=True)
class Principal(CourtScoped):
    """Who a request authenticated as: an API key's id, role and courts."""

    key_id: int
    role: Role
    courts: frozenset[str]
    """The courts a greffe key sees (empty for an admin key, which sees them all)."""

    @property
    def actor(self) -> str:
        """How the audit trail names what this key did."""
        return f"api-key:{self.key_id}"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the only moment its secret exists outside the client."""

    key_id: int
    key: str = field(repr=False)
    role: Role
    courts: tuple[str, ...]
    label: str


@dataclass(frozen=True, slots=True)
class AuthThrottlePolicy:
    max_failures: int
    """Failed authentications from one address, within `window`, before it is locked out."""
    window: timedelta
    lockout: timedelta
    """The first lock-out; each next one lasts twice as long."""


class ApiKeyHasher:
    """The keyed hash a key is stored as (domain-separated from the codes' hash)."""

    def __init__(self, server_secret: bytes) -> None:
        self._key = hmac.new(server_secret, b"greffe-api-key", hashlib.sha256).digest()

    def digest(self, lookup_id: str, secret: str) -> str:
        mac = hmac.new(self._key, f"{lookup_id}\0{secret}".encode("ascii"), hashlib.sha256)
        return HASH_SCHEME + mac.hexdigest()

    def matches(self, lookup_id: str, secret: str, stored: str) -> bool:
        return hmac.compare_digest(self.digest(lookup_id, secret), stored)


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


class ApiKeys:
    """Creates, lists and revokes API keys, and authenticates the ones requests present."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        hasher: ApiKeyHasher,
        policy: AuthThrottlePolicy,
        randbytes: RandBytes = secrets.token_bytes,
    ) -> None:
        self.db = db
        self.clock = clock
        self.hasher = hasher
        self.policy = policy
        self._randbytes = randbytes

    # -- administration -------------------------------------------------------
    def create(self, role: str, courts: Sequence[str], label: str, actor: str) -> IssuedKey:
        """A new key; its secret is in the returned value and nowhere else."""
        parsed_role, codes, label = _check_request(role, courts, label)
        lookup = _base32(self._randbytes(LOOKUP_BYTES))
        secret = _base32(self._randbytes(SECRET_BYTES))
        now = self.clock()
        with self.db.transaction() as session:
            known = CourtRepository(session)
            for code in codes:
                if known.by_code(code) is None:
                    raise NotFound(f"unknown court {code}")
            row = ApiKeyRepository(session).add(
                ApiKey(
                    role=parsed_role.value,
                    courts={"courts": list(codes)},
                    lookup_id=lookup,
                    secret_hash=self.hasher.digest(lookup, secret),
                    label=label,
                    created_at=now,
                )
            )
            append_event(
                session, now, "api_key.created", actor=actor, subject=f"api-key:{row.id}",
                data={"role": parsed_role.value, "courts": list(codes), "lookup_id": lookup},
            )  # fmt: skip
            key_id = row.id
        return IssuedKey(key_id, f"{PREFIX}_{lookup}_{secret}", parsed_role, codes, label)

    def list(self) -> list[dict[str, Any]]:
        with self.db.reading() as session:
            return [_key_dict(row) for row in ApiKeyRepository(session).all()]

    def revoke(self, key_id: int, actor: str) -> None:
        now = self.clock()
        with self.db.transaction() as session:
            row = ApiKeyRepository(session).get(key_id, for_update=True)
            if row is None:
                raise NotFound(f"unknown API key {key_id}")
            if row.revoked_at is not None:
                raise Conflict(f"API key {key_id} is already revoked")
            row.revoked_at = now
            append_event(session, now, "api_key.revoked", actor=actor, subject=f"api-key:{key_id}")

    # -- authentication ---------------------------------------------------------
    def authenticate(self, presented: str | None, client: str) -> Principal:
        """The principal of a presented key; Unauthenticated or Throttled otherwise.

        A request with no key at all is refused without counting: only a key
        that was tried and failed counts against the address (and is audited).
        """
        now = self.clock()
        throttle_key = f"http-auth:{client}"
        with self.db.reading() as session:
            if ThrottleRepository(session).any_locked([throttle_key], now):
                raise Throttled("too many failed authentications from this address; try later")
            if not presented:
                raise Unauthenticated("an API key is required (Authorization: Bearer gk_…)")
            principal, reason = self._match(session, presented)
        if principal is None:
            self._record_failure(throttle_key, client, presented, reason, now)
            raise Unauthenticated("API key unknown, revoked or wrong")
        return principal

    def _match(self, session: Session, presented: str) -> tuple[Principal | None, str]:
        parsed = _KEY_RE.fullmatch(presented)
        lookup, secret = parsed.groups() if parsed else ("", "")
        row = ApiKeyRepository(session).by_lookup(lookup) if parsed else None
        # The hash is computed and compared whether or not the row exists (even timing).
        stored = row.secret_hash if row is not None else _DUMMY_HASH
        matches = self.hasher.matches(lookup, secret, stored)
        if row is None:
            return None, "malformed" if not parsed else "unknown"
        if not matches:
            return None, "wrong secret"
        if row.revoked_at is not None:
            return None, "revoked"
        courts = frozenset(row.courts.get("courts", []))
        return Principal(row.id, Role(row.role), courts), ""

    def _record_failure(
        self, throttle_key: str, client: str, presented: str, reason: str, now: datetime
    ) -> None:
        """Count the failure against the address and audit it (the lookup id, never the secret)."""
        named = _LOOKUP_RE.match(presented)
        with self.db.transaction() as session:
            row = ThrottleRepository(session).locked_row(throttle_key, now)
            if now - row.window_started_at > self.policy.window:
                row.failures, row.window_started_at = 0, now
            row.failures += 1
            locked = row.failures >= self.policy.max_failures
            if locked:
                row.locked_until = now + self.policy.lockout * (2 ** min(row.lockouts, 10))
                row.lockouts += 1
                row.failures = 0
            append_event(
                session, now, "api.auth_failed", actor=f"http:{client}",
                subject=f"api-key-lookup:{named.group(1)}" if named else "",
                data={"client": client, "reason": reason, "locked": locked},
            )  # fmt: skip


def _check_request(
    role: str, courts: Sequence[str], label: str
) -> tuple[Role, tuple[str, ...], str]:
    try:
        parsed = Role(role)
    except ValueError:
        raise InputError(f"invalid role {role!r}: admin or greffe") from None
    codes = tuple(dict.fromkeys(court_code(code) for code in courts))
    if parsed is Role.GREFFE and not codes:
        raise InputError("a greffe key needs at least one court (--court)")
    if parsed is Role.ADMIN and codes:
        raise InputError("an admin key sees every court: give no court")
    label = label.strip()
    if len(label) > 200:
        raise InputError("key name must be at most 200 characters")
    return parsed, codes, label


def _key_dict(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "lookup_id": row.lookup_id,
        "role": row.role,
        "courts": list(row.courts.get("courts", [])),
        "name": row.label,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }

