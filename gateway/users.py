"""Console accounts: create one (with an enrolment link), enrol, log in, list, disable.

Each account is one person's (décret 2011, art. 3): an e-mail address as
login, a password (argon2id) and a TOTP second factor (RFC 6238).  An
administrator creates the account; the person sets both factors from a
one-time link valid `enrolment_ttl`, whose token is stored only as a keyed
hash.  The TOTP secret has to be read back to check codes, so it cannot be
hashed: it is stored AES-GCM-encrypted under a key derived from the server
secret, bound to its account's id, so a database dump alone gives no code.

Failed logins are counted per account and per client address
(`gateway.storage.throttles`), each past its limit locked for a period that
doubles at each lock-out; every failure is audited with its reason, never
the password or the code.  A locked account refuses even the right
password until the lock ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.apikeys import CourtScoped, Role
from gateway.errors import Conflict, InputError, NotFound, Throttled, Unauthenticated
from gateway.model import Clock, Mailbox, court_code
from gateway.storage.audit import append_event
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.models import ConsoleUser
from gateway.storage.throttles import ThrottleRepository
from gateway.storage.users import UserRepository

RandBytes = Callable[[int], bytes]
TOKEN_BYTES = 32
PASSWORD_MIN = 12
PASSWORD_MAX = 1024
TOTP_STEP = 30
TOTP_DRIFT = 1
"""Steps accepted either side of now: a phone's clock may be 30 s off."""
ISSUER = "Greffe"


class LoginRefused(Unauthenticated):
    """Wrong login, password or code (the person is told no more than that)."""


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    max_account_failures: int
    max_address_failures: int
    window: timedelta
    lockout: timedelta
    """The first lock-out; each next one lasts twice as long."""


@dataclass(frozen=True, slots=True)
class Account(CourtScoped):
    """A console user as a session sees them."""

    id: int
    email: str
    role: Role
    courts: frozenset[str]
    generation: int
    """The session generation the account is at (a cookie of another one is stale)."""

    @property
    def actor(self) -> str:
        """How the audit trail names what this user did."""
        return f"user:{self.id}"


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new enrolment link's token: shown once, stored only as a keyed hash."""

    user_id: int
    email: str
    token: str = field(repr=False)
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PendingEnrolment:
    """What the enrolment page shows: whose account, and the TOTP secret to scan."""

    user_id: int
    email: str
    secret: str = field(repr=False)

    @property
    def provisioning_uri(self) -> str:
        return pyotp.TOTP(self.secret, interval=TOTP_STEP).provisioning_uri(
            name=self.email, issuer_name=ISSUER
        )


class SecretBox:
    """AES-256-GCM under a key derived from the server secret; the account id as associated data."""

    def __init__(self, server_secret: bytes) -> None:
        key = hmac.new(server_secret, b"greffe-console-totp", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, user_id: int, secret: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode("ascii"), f"user:{user_id}".encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, user_id: int, sealed: str) -> str:
        if not sealed.startswith("v1:"):
            raise ValueError("unknown TOTP secret format")
        data = base64.b64decode(sealed[3:])
        try:
            plain = self._aead.decrypt(data[:12], data[12:], f"user:{user_id}".encode())
        except InvalidTag:
            raise ValueError("TOTP secret does not open (another server secret?)") from None
        return plain.decode("ascii")


def totp_step(code: str, secret: str, now: datetime) -> int | None:
    """The step whose code `code` is (now, or one step either side), or None."""
    digits = "".join(code.split())
    if not (digits.isdigit() and len(digits) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now.timestamp()) // TOTP_STEP
    found = None
    for step in range(current - TOTP_DRIFT, current + TOTP_DRIFT + 1):
        # Every candidate is compared, so the time taken does not say which matched.
        if hmac.compare_digest(totp.at(step * TOTP_STEP), digits):
            found = step
    return found


class Users:
    """Console accounts, shared by the CLI (`gateway users`) and the console."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        server_secret: bytes,
        policy: LoginPolicy,
        enrolment_ttl: timedelta,
        *,
        hasher: PasswordHasher | None = None,
        randbytes: RandBytes = secrets.token_bytes,
    ) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        self.enrolment_ttl = enrolment_ttl
        self._box = SecretBox(server_secret)
        self._token_key = hmac.new(server_secret, b"greffe-console-enrolment", hashlib.sha256)
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106's low-memory profile
        self._dummy = self._hasher.hash("not a password: timing only")
        self._randbytes = randbytes

    # -- administration -------------------------------------------------------
    def add(self, email: str, role: str, courts: Sequence[str], actor: str) -> Enrolment:
        """A new account, not yet usable: the returned link's token sets its factors."""
        login, parsed_role, codes = _check_account(email, role, courts)
        now = self.clock()
        with self.db.transaction() as session:
            known = CourtRepository(session)
            for code in codes:
                if known.by_code(code) is None:
                    raise NotFound(f"unknown court {code}")
            users = UserRepository(session)
            if users.by_email(login) is not None:
                raise Conflict(f"a user {login} already exists")
            user = users.add(
                ConsoleUser(
                    email=login, role=parsed_role.value, courts={"courts": list(codes)},
                    created_at=now, created_by=actor, session_generation=0,
                )
            )  # fmt: skip
            enrolment = self._new_link(user, now)
            append_event(
                session, now, "user.created", actor=actor, subject=f"user:{user.id}",
                data={"role": parsed_role.value, "courts": list(codes)},
            )  # fmt: skip
        return enrolment

    def reset(self, user_id: int, actor: str) -> Enrolment:
        """A new enrolment link for an account (a lost phone or password): old factors cleared."""
        now = self.clock()
        with self.db.transaction() as session:
            users = UserRepository(session)
            user = _existing(users, user_id)
            if user.disabled_at is not None:
                raise Conflict(f"user {user_id} is disabled")
            user.password_hash = user.totp_secret = user.totp_last_step = None
            user.enrolled_at = None
            enrolment = self._new_link(user, now)
            users.end_sessions(user.id)
            append_event(session, now, "user.reset", actor=actor, subject=f"user:{user.id}")
        return enrolment

    def _new_link(self, user: ConsoleUser, now: datetime) -> Enrolment:
        token = base64.urlsafe_b64encode(self._randbytes(TOKEN_BYTES)).rstrip(b"=").decode()
        user.enrolment_hash = self._token_hash(token)
        user.enrolment_expires_at = now + self.enrolment_ttl
        return Enrolment(user.id, user.email, token, user.enrolment_expires_at)

    def accounts(self) -> list[dict[str, Any]]:
        """Every account, as `users list` shows it (no hash, secret or link)."""
        with self.db.reading() as session:
            return [_user_dict(user) for user in UserRepository(session).all()]

    def disable(self, user_id: int, actor: str) -> None:
        """The account can no longer log in, and its open sessions end now."""
        now = self.clock()
        with self.db.transaction() as session:
            users = UserRepository(session)
            user = _existing(users, user_id)
            if user.disabled_at is not None:
                raise Conflict(f"user {user_id} is already disabled")
            user.disabled_at, user.disabled_by = now, actor
            user.enrolment_hash = user.enrolment_expires_at = None
            users.end_sessions(user.id)
            append_event(session, now, "user.disabled", actor=actor, subject=f"user:{user.id}")

    def colleagues(self, court: str) -> list[tuple[int, str]]:
        """(id, login) of the enrolled, enabled greffe users of a court."""
        with self.db.reading() as session:
            return [
                (user.id, user.email)
                for user in UserRepository(session).all()
                if user.role == Role.GREFFE.value and user.disabled_at is None
                and user.enrolled_at is not None and court in user.courts.get("courts", [])
            ]  # fmt: skip

    # -- enrolment --------------------------------------------------------------
    def _token_hash(self, token: str) -> str:
        mac = self._token_key.copy()
        mac.update(token.encode("ascii", "replace"))
        return mac.hexdigest()

    def pending(self, token: str) -> PendingEnrolment:
        """The account a live link enrols, with its TOTP secret (drawn on the first visit)."""
        now = self.clock()
        with self.db.transaction() as session:
            users = UserRepository(session)
            user = self._live_link(users, token, now)
            if user.totp_secret is None:
                users.set_pending_totp(user.id, self._box.seal(user.id, pyotp.random_base32(32)))
                session.refresh(user)
            assert user.totp_secret is not None
            return PendingEnrolment(user.id, user.email, self._box.open(user.id, user.totp_secret))

    def _live_link(self, users: UserRepository, token: str, now: datetime) -> ConsoleUser:
        user = users.by_enrolment_hash(self._token_hash(token)) if len(token) < 100 else None
        expires = user.enrolment_expires_at if user else None
        if user is None or expires is None or expires <= now or user.disabled_at is not None:
            raise NotFound("enrolment link unknown, used or expired")
        return user

    def enrol(self, token: str, password: str, confirm: str, code: str) -> Account:
        """Set the password and confirm the TOTP factor with a first code; the link is spent."""
        _check_password(password, confirm)
        now = self.clock()
        with self.db.transaction() as session:
            users = UserRepository(session)
            user = self._live_link(users, token, now)
            if user.totp_secret is None:
                raise NotFound("enrolment link unknown, used or expired")
            step = totp_step(code, self._box.open(user.id, user.totp_secret), now)
            if step is None:
                raise InputError("the TOTP code is wrong: check the phone's clock and try again")
            if not users.complete_enrolment(
                user.id, self._token_hash(token), self._hasher.hash(password), step, now
            ):
                raise NotFound("enrolment link unknown, used or expired")
            append_event(session, now, "user.enrolled", actor=f"user:{user.id}",
                         subject=f"user:{user.id}")  # fmt: skip
            session.refresh(user)
            return _account(user)

    # -- login ------------------------------------------------------------------
    def login(self, email: str, password: str, code: str, client: str) -> Account:
        """The account whose three factors these are; LoginRefused or Throttled otherwise."""
        now = self.clock()
        login = _login_form(email)
        keys = [_account_key(login), f"console-login:address:{client}"]
        with self.db.reading() as session:
            if ThrottleRepository(session).any_locked(keys, now):
                raise Throttled("too many failed logins; try again later")
            user = UserRepository(session).by_email(login)
            reason = self._check_factors(user, password)
        if user is not None and not reason:
            with self.db.transaction() as session:
                reason = self._check_code(session, user, code, now)
                if not reason:
                    user = UserRepository(session).get(user.id)
                    assert user is not None
                    user.last_login_at = now
                    append_event(session, now, "console.login", actor=f"user:{user.id}",
                                 subject=f"user:{user.id}", data={"client": client})  # fmt: skip
                    return _account(user)
        self._record_failure(keys, user, client, reason or "unknown", now)
        raise LoginRefused("login, password or code is wrong")

    def _check_factors(self, user: ConsoleUser | None, password: str) -> str:
        """Why the password does not let this user in ('' if it does); argon2 runs either way."""
        stored = user.password_hash if user is not None and user.password_hash else self._dummy
        try:
            matches = bool(self._hasher.verify(stored, password[:PASSWORD_MAX]))
        except (VerificationError, InvalidHashError):
            matches = False
        if user is None:
            return "unknown account"
        if user.disabled_at is not None:
            return "disabled"
        if user.password_hash is None or user.totp_secret is None:
            return "not enrolled"
        return "" if matches else "wrong password"

    def _check_code(self, session: Session, user: ConsoleUser, code: str, now: datetime) -> str:
        assert user.totp_secret is not None
        step = totp_step(code, self._box.open(user.id, user.totp_secret), now)
        if step is None:
            return "wrong code"
        if not UserRepository(session).claim_totp_step(user.id, step):
            return "code already used"  # a code seen over a shoulder, replayed
        return ""

    def _record_failure(
        self, keys: list[str], user: ConsoleUser | None, client: str, reason: str, now: datetime
    ) -> None:
        limits = [self.policy.max_account_failures, self.policy.max_address_failures]
        with self.db.transaction() as session:
            throttles = ThrottleRepository(session)
            locked = [
                self._count(throttles, key, limit, now)
                for key, limit in zip(keys, limits, strict=True)
            ]
            append_event(
                session, now, "console.login_failed", actor=f"http:{client}",
                subject=f"user:{user.id}" if user else "",
                data={"client": client, "reason": reason, "account_locked": locked[0],
                      "address_locked": locked[1]},
            )  # fmt: skip

    def _count(self, throttles: ThrottleRepository, key: str, limit: int, now: datetime) -> bool:
        row = throttles.locked_row(key, now)
        if now - row.window_started_at > self.policy.window:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        if row.failures < limit:
            return False
        row.locked_until = now + self.policy.lockout * (2 ** min(row.lockouts, 10))
        row.lockouts += 1
        row.failures = 0
        return True

    # -- sessions ---------------------------------------------------------------
    def session_account(self, user_id: int, generation: int) -> Account | None:
        """The account a session cookie names, if it is still enabled and the cookie current."""
        with self.db.reading() as session:
            user = UserRepository(session).get(user_id)
        if user is None or user.disabled_at is not None or user.password_hash is None:
            return None
        account = _account(user)
        return account if account.generation == generation else None

    def logout(self, account: Account, client: str) -> None:
        """End every session of the account (a cookie cannot be taken back, its generation can)."""
        now = self.clock()
        with self.db.transaction() as session:
            UserRepository(session).end_sessions(account.id)
            append_event(session, now, "console.logout", actor=account.actor,
                         subject=account.actor, data={"client": client})  # fmt: skip


def _login_form(email: str) -> str:
    try:
        return Mailbox.parse(email[:320]).key
    except InputError:
        return " ".join(email.split())[:320].lower()


def _account_key(login: str) -> str:
    return "console-login:account:" + hashlib.sha256(login.encode("utf-8")).hexdigest()[:40]


def _check_account(
    email: str, role: str, courts: Sequence[str]
) -> tuple[str, Role, tuple[str, ...]]:
    login = Mailbox.parse(email).key
    try:
        parsed = Role(role)
    except ValueError:
        raise InputError(f"invalid role {role!r}: admin or greffe") from None
    codes = tuple(dict.fromkeys(court_code(code) for code in courts))
    if parsed is Role.GREFFE and not codes:
        raise InputError("a greffe user needs at least one court (--court)")
    if parsed is Role.ADMIN and codes:
        raise InputError("an admin user sees every court: give no court")
    return login, parsed, codes


def _check_password(password: str, confirm: str) -> None:
    if password != confirm:
        raise InputError("the two passwords differ")
    if len(password) < PASSWORD_MIN:
        raise InputError(f"the password must have at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InputError(f"the password must have at most {PASSWORD_MAX} characters")


def _existing(users: UserRepository, user_id: int) -> ConsoleUser:
    user = users.get(user_id, for_update=True)
    if user is None:
        raise NotFound(f"unknown user {user_id}")
    return user


def _account(user: ConsoleUser) -> Account:
    return Account(
        user.id, user.email, Role(user.role), frozenset(user.courts.get("courts", [])),
        user.session_generation,
    )  # fmt: skip


def _user_dict(user: ConsoleUser) -> dict[str, Any]:
    if user.disabled_at is not None:
        state = "disabled"
    elif user.enrolled_at is not None:
        state = "active"
    else:
        state = "enrolment pending"
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "courts": list(user.courts.get("courts", [])),
        "state": state,
        "created_at": user.created_at.isoformat(),
        "enrolled_at": user.enrolled_at.isoformat() if user.enrolled_at else None,
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
    }
