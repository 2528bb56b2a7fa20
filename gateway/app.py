"""Composition root: builds the gateway's services from settings and hands them out."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path

from gateway.admin import Admin
from gateway.audit.chain import lock_head
from gateway.errors import ConfigError
from gateway.ingest.codereq import CodeIssuer
from gateway.ingest.dns import TxtResolver
from gateway.ingest.documents import DocumentPolicy
from gateway.ingest.mime import MimeLimits
from gateway.ingest.pipeline import Pipeline, RoleHandler
from gateway.ingest.recipients import RecipientPolicy, Role
from gateway.ingest.senderauth import SenderAuthenticator
from gateway.ingest.status import StatusReporter
from gateway.ingest.submit import SubmissionStore
from gateway.metrics import Metrics
from gateway.model import Clock
from gateway.otp.codes import CodeHasher
from gateway.otp.service import CodePolicy, CodeService
from gateway.outbox.compose import MailComposer
from gateway.settings import Settings
from gateway.storage import migrate
from gateway.storage.blobstore import BlobStore
from gateway.storage.crypto import GpgKeyring, ReceiptSigner
from gateway.storage.db import Database
from gateway.storage.groupcommit import GroupCommitter


def utc_now() -> datetime:
    return datetime.now(UTC)


def read_secret(path: Path) -> bytes:
    """The server secret for keyed hashes (hex in a 0600 file)."""
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        raise ConfigError(f"server secret {path} is missing (run `gateway init`)") from None
    except (ValueError, OSError):
        raise ConfigError(f"server secret {path} is unreadable") from None
    if len(secret) < 32:
        raise ConfigError(f"server secret {path} is shorter than 32 bytes")
    return secret


class Services:
    """Everything a command or the server needs, built once from the settings."""

    def __init__(self, settings: Settings, clock: Clock = utc_now) -> None:
        self.settings = settings
        self.clock = clock

    @functools.cached_property
    def metrics(self) -> Metrics:
        return Metrics()

    @functools.cached_property
    def db(self) -> Database:
        return Database.from_url(self.settings.database.url.get_secret_value())

    @functools.cached_property
    def keyring(self) -> GpgKeyring:
        return GpgKeyring(self.settings.data_dir / "gnupg")

    @functools.cached_property
    def server_secret(self) -> bytes:
        return read_secret(self.settings.secret_file)

    @functools.cached_property
    def admin(self) -> Admin:
        return Admin(self.db, self.clock, import_key=self.keyring.import_public)

    @functools.cached_property
    def signer(self) -> ReceiptSigner:
        try:
            armored = self.settings.signing_key_file.read_text("ascii")
        except OSError:
            raise ConfigError(
                f"signing key {self.settings.signing_key_file} is unreadable (run `gateway init`)"
            ) from None
        return ReceiptSigner(armored)

    @functools.cached_property
    def composer(self) -> MailComposer:
        return MailComposer.from_settings(self.settings, signer=self.signer, clock=self.clock)

    @functools.cached_property
    def codes(self) -> CodeService:
        policy = self.settings.codes
        return CodeService(
            CodeHasher(self.server_secret),
            CodePolicy(
                policy.ttl, policy.max_failures, policy.lockout, policy.max_requests_per_day
            ),
        )

    @functools.cached_property
    def code_issuer(self) -> CodeIssuer:
        return CodeIssuer(self.db, self.codes, self.clock)

    @functools.cached_property
    def recipients(self) -> RecipientPolicy:
        addresses = self.settings.addresses
        return RecipientPolicy(
            self.settings.gateway.domain,
            {
                Role.CODES: addresses.codes,
                Role.SUBMIT: addresses.submit,
                Role.STATUS: addresses.status,
            },
        )

    @functools.cached_property
    def authenticator(self) -> SenderAuthenticator:
        dns = self.settings.dns
        resolver = TxtResolver(list(dns.nameservers), dns.timeout)
        return SenderAuthenticator(
            resolver.dkim_dnsfunc, require_dkim=self.settings.auth.require_dkim
        )

    @functools.cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.blob_dir)

    @functools.cached_property
    def submissions(self) -> SubmissionStore:
        limits = self.settings.limits
        return SubmissionStore(
            db=self.db,
            codes=self.codes,
            blobs=self.blobs,
            policy=DocumentPolicy(
                frozenset(limits.allowed_types), limits.max_document_bytes, limits.max_documents
            ),
            disk_reserve=limits.disk_reserve_bytes,
            clock=self.clock,
            observe=self.metrics.observe_stage,
            committer=self.committer,
        )

    @functools.cached_property
    def committer(self) -> GroupCommitter:
        """The writer that commits accepted submissions in batches (one fsync per batch)."""
        return GroupCommitter(
            self.db, on_begin=lock_head, on_batch=self.metrics.observe_commit_batch
        )

    def role_handlers(self) -> dict[Role, RoleHandler]:
        status = StatusReporter(self.db, self.submissions, self.clock)
        return {
            Role.CODES: self.code_issuer.handle,
            Role.SUBMIT: self.submissions.handle,
            Role.STATUS: status.handle,
        }

    @functools.cached_property
    def pipeline(self) -> Pipeline:
        limits = self.settings.limits
        return Pipeline(
            db=self.db,
            authenticator=self.authenticator,
            limits=MimeLimits(
                max_depth=limits.max_mime_depth,
                max_parts=limits.max_mime_parts,
                max_headers=limits.max_headers,
            ),
            max_message_bytes=limits.max_message_bytes,
            id_domain=self.settings.gateway.domain,
            clock=self.clock,
            handlers=self.role_handlers(),
            observe=self.metrics.observe_stage,
            large_message_bytes=limits.large_message_bytes,
        )

    def compose_mail(self, kind: str, recipient: str, values: dict[str, str]) -> bytes:
        """What the outbox worker calls to turn template values into a signed message."""
        return self.composer.compose(kind, recipient, **values)

    def upgrade_database(self) -> None:
        migrate.upgrade(self.db)

    def close(self) -> None:
        if "committer" in self.__dict__:
            self.committer.close()
        if "db" in self.__dict__:
            self.db.dispose()
        if "keyring" in self.__dict__:
            self.keyring.close()  # the gpg-agent that importing a court key started
