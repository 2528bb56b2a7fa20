"""The database schema as typed SQLAlchemy models (one table per concept, singular names).

Only what routing and checks need is kept in clear: codes, references,
sizes, hashes, times and statuses.  Everything a sender wrote (subjects,
filenames, bodies) lives in encrypted blobs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UtcDateTime(),
        dict[str, Any]: JSON(),
        bytes: LargeBinary(),
    }


MAX_ID = 2**31 - 1
"""The largest INTEGER id: a paging cursor past it is clamped (PostgreSQL refuses it)."""


def table_of(model: type[Base]) -> Table:
    """A model's table, for Core statements on hot paths (typed: `__table__` is a FromClause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Court(Base):
    __tablename__ = "court"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    """Upper-case court code, e.g. TJ-PARIS."""
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class CourtKey(Base):
    __tablename__ = "court_key"
    __table_args__ = (UniqueConstraint("court_id", "fingerprint"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    court_id: Mapped[int] = mapped_column(ForeignKey("court.id"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    armored: Mapped[str] = mapped_column(Text)
    """The armoured public key (never a secret key)."""
    user_ids: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    """active | retired: only active keys receive new blobs."""
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Registration(Base):
    __tablename__ = "registration"
    __table_args__ = (
        # One active registration per (court, measure, address); history keeps revoked ones.
        Index(
            "uq_registration_active",
            "court_id",
            "measure",
            "address_key",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_registration_address_key", "address_key"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    court_id: Mapped[int] = mapped_column(ForeignKey("court.id"))
    measure: Mapped[str] = mapped_column(String(40))
    address: Mapped[str] = mapped_column(String(320))
    """The mailbox as registered (local part as given, domain lower-case IDNA)."""
    address_key: Mapped[str] = mapped_column(String(320))
    """Comparison form: the local part folded to lower case."""
    status: Mapped[str] = mapped_column(String(16), default="active")
    registered_by: Mapped[str] = mapped_column(String(200))
    registered_at: Mapped[datetime]
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]


class RequestCounter(Base):
    """Next request number per court and year, for <COURT>-<YYYY>-<NNNNNN>."""

    __tablename__ = "request_counter"
    court_id: Mapped[int] = mapped_column(ForeignKey("court.id"), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Request(Base):
    __tablename__ = "request"
    __table_args__ = (Index("ix_request_court_status", "court_id", "status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    court_id: Mapped[int] = mapped_column(ForeignKey("court.id"))
    registration_id: Mapped[int] = mapped_column(ForeignKey("registration.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), default="open")
    status_reason: Mapped[str | None] = mapped_column(Text)
    """The greffe's reason, written by the clerk when rejecting (mailed to the guardian)."""
    status_notes: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """The clerk's notes on single documents when rejecting, keyed "<submission>/<document>"
    (`{"2/1": "page 3 illisible"}`); NULL when none were given."""
    submission_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime]
    sealed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    manifest_blob: Mapped[str | None] = mapped_column(String(200))
    """Encrypted request manifest, rewritten at each submission."""
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Kept from the retention purge whatever its age (`gateway requests hold`)."""


class Code(Base):
    __tablename__ = "code"
    id: Mapped[int] = mapped_column(primary_key=True)
    code_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    """Keyed hash of the canonical code; the code itself is never stored."""
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), unique=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("registration.id"), index=True)
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    use_count: Mapped[int] = mapped_column(Integer, default=0)


class Throttle(Base):
    """Failure counters and lockouts by key (registration, address or client IP)."""

    __tablename__ = "throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    """How many times this key was locked: the lock period doubles each time."""
    window_started_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]


class Submission(Base):
    __tablename__ = "submission"
    __table_args__ = (
        UniqueConstraint("request_id", "number"),
        UniqueConstraint("message_id_sha256", "raw_sha256"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(48), unique=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"))
    number: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(20))
    message_id_sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the Message-ID (dedupe key with raw_sha256; the ID itself is in the blob)."""
    raw_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]
    registration_id: Mapped[int] = mapped_column(ForeignKey("registration.id"))
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("credential.id"))
    auth_results: Mapped[dict[str, Any]]
    """DKIM domain/selector/result, alignment, TLS: no sender text."""
    raw_blob: Mapped[str] = mapped_column(String(200))
    manifest_blob: Mapped[str] = mapped_column(String(200))


class Document(Base):
    __tablename__ = "document"
    __table_args__ = (UniqueConstraint("submission_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"))
    idx: Mapped[int] = mapped_column(Integer)
    detected_type: Mapped[str] = mapped_column(String(120))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    blob: Mapped[str] = mapped_column(String(200))
    warnings: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    """Active content found and accepted (machine words such as `javascript`, never sender
    text), in clear for the greffe's screens; NULL when none was found (so a query for
    flagged documents is `warnings IS NOT NULL`)."""


class Blob(Base):
    """Every blob written, named before it is written so a scan can explain orphans."""

    __tablename__ = "blob"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the stored (encrypted) bytes."""
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    purged_at: Mapped[datetime | None]
    """Set when the purge deleted the rows that used this blob: the blob goes next, then
    this row (a purge interrupted in between is finished by the next one)."""


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    """code | receipt | state | acknowledgement | rejection | registration |
    registration_revoked | check_report | credential_expiry | postmaster"""
    recipient: Mapped[str] = mapped_column(String(320))
    message: Mapped[bytes | None]
    """The signed message, cleared once delivered."""
    template_values: Mapped[dict[str, Any] | None]
    """Or the template's values: composed and signed at delivery, cleared once delivered."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending | sent | failed (gave up)"""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    related_reference: Mapped[str | None] = mapped_column(String(48))


class OutboxAttempt(Base):
    __tablename__ = "outbox_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime]
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class AuditEvent(Base):
    __tablename__ = "audit_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200), default="")
    data: Mapped[dict[str, Any]]
    prev_sha256: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """A single row naming the chain's last event: locking it serialises appends."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64))


class Software(Base):
    """Homologated software (Annexe III): only these can be named on a credential."""

    __tablename__ = "software"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    """As the ministry's list names it; compared exactly."""
    publisher: Mapped[str] = mapped_column(String(200), default="")
    homologated_at: Mapped[datetime]
    homologated_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None]
    """Set when the homologation is withdrawn: every credential for it is revoked too."""
    revoked_by: Mapped[str | None] = mapped_column(String(200))


class Credential(Base):
    """A teletransmission credential (Annexe II): one address, one software, two years."""

    __tablename__ = "credential"
    __table_args__ = (Index("ix_credential_expires_at", "expires_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    address_key: Mapped[str] = mapped_column(String(320), index=True)
    software: Mapped[str] = mapped_column(String(200))
    """The name of a `software` row."""
    lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    """The public first part of the secret (`<lookup id>.<secret>`): finds the one row."""
    secret_hash: Mapped[str] = mapped_column(String(300))
    """argon2id of the whole secret (PHC string); the secret itself is never stored."""
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    issued_by: Mapped[str] = mapped_column(String(200), default="")
    revoked_by: Mapped[str | None] = mapped_column(String(200))
    last_used_at: Mapped[datetime | None]
    """The last successful AUTH with it."""
    expiry_notice_sent_at: Mapped[datetime | None]
    """When the notice that it expires soon was queued (once per credential)."""


class ApiKey(Base):
    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    courts: Mapped[dict[str, Any]]
    """{"courts": [...]} for the greffe role."""
    lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(300))
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ConsoleUser(Base):
    """A personal account of the clerks' console (décret 2011, art. 3): one person, one login."""

    __tablename__ = "console_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    """The login, in comparison form (local part folded to lower case, domain IDNA)."""
    role: Mapped[str] = mapped_column(String(16))
    """admin | greffe"""
    courts: Mapped[dict[str, Any]]
    """{"courts": [...]}: the courts a greffe user sees (empty for an admin)."""
    password_hash: Mapped[str | None] = mapped_column(String(300))
    """argon2id (PHC string); NULL until the person enrols."""
    totp_secret: Mapped[str | None] = mapped_column(String(300))
    """The RFC 6238 secret, AES-GCM encrypted under a key derived from the server secret."""
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    """The last 30-second step whose code was accepted: a code is never taken twice."""
    enrolment_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    """Keyed hash of the one-time enrolment token; NULL once used."""
    enrolment_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    enrolled_at: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    disabled_by: Mapped[str | None] = mapped_column(String(200))
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped at logout and when disabled: every session cookie signed before is refused."""


class ReadMark(Base):
    """When a console user last opened a request (unread: never, or before its last change)."""

    __tablename__ = "read_mark"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("console_user.id", ondelete="CASCADE"), primary_key=True
    )
    request_id: Mapped[int] = mapped_column(
        ForeignKey("request.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    read_at: Mapped[datetime]


class RequestAssignment(Base):
    """The clerk a request is assigned to (at most one); the purge takes it with the request."""

    __tablename__ = "request_assignment"
    request_id: Mapped[int] = mapped_column(
        ForeignKey("request.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("console_user.id"), index=True)
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(200))


class ImapCursor(Base):
    __tablename__ = "imap_cursor"
    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)
    folder: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class ImapMessage(Base):
    __tablename__ = "imap_message"
    __table_args__ = (Index("ix_imap_message_state", "mailbox", "state"),)
    mailbox: Mapped[str] = mapped_column(String(100), primary_key=True)
    folder: Mapped[str] = mapped_column(String(200), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    raw_sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    """fetched | stored | stripped | quarantined"""
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submission.id"))
    updated_at: Mapped[datetime]


class Lease(Base):
    """Named leases so several nodes sharing one database never run the same job at once."""

    __tablename__ = "lease"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]


class CheckReport(Base):
    __tablename__ = "check_report"
    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    ok: Mapped[bool]
    report: Mapped[dict[str, Any]]
