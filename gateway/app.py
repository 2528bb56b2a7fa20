"""Composition root: the only module that builds services and running parts from settings.

`Services` builds each service once, lazily, with its collaborators.  The
`build_*` functions turn services into running parts (`gateway.lifecycle`):
the SMTP listeners (one per `ListenerSpec`), an IMAP watcher per mailbox,
the outbox worker, the sweeper, the blob sweep, the daily retention purge
and check (once per cluster, `gateway.jobs`) and the HTTP server.
`run_gateway` builds
them, starts them in order, waits for SIGTERM/SIGINT and stops them in
reverse order.  Nothing is set on an object after it is built, and no
adapter receives this module's `Services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from gateway.admin import Admin
from gateway.apikeys import ApiKeyHasher, ApiKeys, AuthThrottlePolicy
from gateway.audit.daily import DailyCheck
from gateway.backup import Backup
from gateway.credentials.notices import NOTICE_INTERVAL, ExpiryNotifier
from gateway.credentials.service import CredentialAdmin
from gateway.credentials.tokens import CredentialHasher
from gateway.credentials.verify import AuthPolicy, CredentialVerifier
from gateway.errors import ConfigError, GatewayError
from gateway.imap.client import ImapClient
from gateway.imap.oauth import token_source_for
from gateway.imap.puller import MailboxPuller, PullerDeps
from gateway.imap.watch import ImapSeams, MailboxRunner, lease_ttl, mailbox_password
from gateway.ingest.codereq import CodeIssuer
from gateway.ingest.dns import TxtResolver
from gateway.ingest.documents import DocumentPolicy
from gateway.ingest.mime import MimeLimits
from gateway.ingest.pipeline import Outcome, Pipeline, RoleHandler
from gateway.ingest.postmaster import PostmasterDesk
from gateway.ingest.recipients import RecipientPolicy, Role
from gateway.ingest.senderauth import SenderAuthenticator
from gateway.ingest.status import StatusReporter
from gateway.ingest.submit import SubmissionStore
from gateway.ingest.teletransmit import TeletransmissionStore
from gateway.jobs import ClusterJob, Schedule
from gateway.lifecycle import LoopingPart, RunningPart, Supervisor
from gateway.metrics import Metrics, multiprocess_registry
from gateway.model import Channel, Clock
from gateway.otp.codes import CodeHasher
from gateway.otp.service import CodePolicy, CodeService
from gateway.otp.sweeper import Sweeper
from gateway.otp.verify import CodeVerifier
from gateway.outbox.compose import MailComposer, sender_address
from gateway.outbox.maildir import MaildirTransport
from gateway.outbox.templates import Templates
from gateway.outbox.worker import Composed, OutboxWorker, Transport, ehlo_name
from gateway.readiness import (
    ReadinessCheck,
    blob_store_writable,
    database_reachable,
    disk_above_reserve,
    keys_loaded,
)
from gateway.records import Records
from gateway.retention import Retention
from gateway.review import ReviewDesk
from gateway.settings import ImapMailbox, Settings, parse_hostport
from gateway.smtp.auth import CredentialAuthenticator
from gateway.smtp.handler import GatewayHandler
from gateway.smtp.limits import ClientTracker, SmtpLimits
from gateway.smtp.listener import ListenerSpec, SmtpListener, TlsMode, make_tls_context
from gateway.storage import migrate
from gateway.storage.audit import lock_head
from gateway.storage.blobbackend import open_blob_store
from gateway.storage.blobstore import BlobStorage
from gateway.storage.blobsweep import LEASE_NAME as BLOB_SWEEP_LEASE
from gateway.storage.blobsweep import SWEEP_INTERVAL, BlobSweeper
from gateway.storage.crypto import GpgKeyring, ReceiptSigner
from gateway.storage.db import Database
from gateway.storage.groupcommit import GroupCommitter
from gateway.storage.imap import ImapState
from gateway.storage.leases import DbLease, new_holder_id
from gateway.storage.notify import OutboxListener, listen_url
from gateway.storage.payload import PayloadWriter
from gateway.users import LoginPolicy, Users
from gateway.wkd import WkdDirectory

if TYPE_CHECKING:  # the HTTP parts are imported where they are built (see `build_http`)
    from gateway.api.server import ApiServer
    from gateway.console.context import ConsoleDeps

log = logging.getLogger("gateway.serve")
SWITCH_INTERVAL = 0.001
OUTBOX_POLL = 5.0
"""How often the outbox looks for due rows when nothing woke it (retries come due)."""


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
    """Everything a command or the server needs, each built once from the settings."""

    def __init__(
        self, settings: Settings, clock: Clock = utc_now, schedule: Schedule | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.schedule = schedule or Schedule()
        """When the cluster jobs (retention purge, daily check) run: a seam for tests."""

    @functools.cached_property
    def metrics(self) -> Metrics:
        return Metrics()

    @functools.cached_property
    def db(self) -> Database:
        database = self.settings.database
        return Database.from_url(database.url.get_secret_value(), database.pool_size)

    @functools.cached_property
    def keyring(self) -> GpgKeyring:
        return GpgKeyring(self.settings.data_dir / "gnupg")

    @functools.cached_property
    def server_secret(self) -> bytes:
        return read_secret(self.settings.secret_file)

    @functools.cached_property
    def admin(self) -> Admin:
        # The keyring is opened on the first key imported, not before: a command that
        # only lists leaves no GnuPG home behind.
        def import_key(armored: str) -> str:
            return self.keyring.import_public(armored)

        return Admin(self.db, self.clock, import_key=import_key)

    def require_schema(self) -> None:
        """Refuse, creating nothing, a database that `gateway init` never made (no schema)."""
        if not migrate.has_schema(self.settings.database.url.get_secret_value()):
            raise ConfigError("database not initialised: run `gateway init`")

    @functools.cached_property
    def review(self) -> ReviewDesk:
        """The greffe's acknowledge / accept / reject, with the guardian's notices."""
        return ReviewDesk(self.db, self.clock)

    @functools.cached_property
    def signer(self) -> ReceiptSigner:
        try:
            armored = self.settings.signing_key_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(
                f"signing key {self.settings.signing_key_file} is unreadable (run `gateway init`)"
            ) from None
        return ReceiptSigner(armored)

    @functools.cached_property
    def composer(self) -> MailComposer:
        """The gateway's outgoing mail: its DKIM key, templates and addresses."""
        settings = self.settings
        try:
            private_pem = settings.dkim_key_file.read_bytes()
        except OSError:
            raise ConfigError(
                f"DKIM key {settings.dkim_key_file} is unreadable (run `gateway init`)"
            ) from None
        defaults = {
            "codes_address": settings.address("codes"),
            "submit_address": settings.address("submit"),
            "status_address": settings.address("status"),
            "submit_local": settings.addresses.submit,
        }
        return MailComposer(
            settings.gateway.domain,
            settings.gateway.name,
            settings.dkim_selector,
            private_pem,
            Templates(settings.templates_dir),
            self.signer,
            self.clock,
            defaults=defaults,
        )

    def compose_mail(self, kind: str, recipient: str, values: dict[str, str]) -> Composed:
        """What the outbox worker calls to turn template values into a signed message."""
        composer = self.composer
        return Composed(composer.from_address, composer.compose(kind, recipient, **values))

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
    def verifier(self) -> CodeVerifier:
        return CodeVerifier(self.db, self.codes)

    @functools.cached_property
    def code_issuer(self) -> CodeIssuer:
        return CodeIssuer(self.db, self.codes, self.clock)

    @functools.cached_property
    def recipients(self) -> RecipientPolicy:
        addresses = self.settings.addresses
        local_parts = {
            Role.CODES: addresses.codes,
            Role.SUBMIT: addresses.submit,
            Role.STATUS: addresses.status,
        }
        if self.settings.gateway.operator_address:  # else nobody to forward postmaster@ to
            local_parts[Role.POSTMASTER] = "postmaster"
        return RecipientPolicy(self.settings.gateway.domain, local_parts)

    @functools.cached_property
    def postmaster(self) -> PostmasterDesk | None:
        """postmaster@'s desk, when `gateway.operator_address` is set (RFC 5321 4.5.1)."""
        operator = self.settings.gateway.operator_address
        if not operator:
            return None
        return PostmasterDesk(self.db, self.composer.compose_forward, operator, self.clock)

    @functools.cached_property
    def authenticator(self) -> SenderAuthenticator:
        dns = self.settings.dns
        resolver = TxtResolver(list(dns.nameservers), dns.timeout)
        return SenderAuthenticator(
            resolver.dkim_dnsfunc, require_dkim=self.settings.auth.require_dkim,
            signed_headers=self.settings.auth.signed_headers,
        )

    @functools.cached_property
    def recording_authenticator(self) -> SenderAuthenticator:
        """DKIM for messages that came with AUTH: verified and recorded, never required."""
        dns = self.settings.dns
        resolver = TxtResolver(list(dns.nameservers), dns.timeout)
        return SenderAuthenticator(
            resolver.dkim_dnsfunc, require_dkim=False,
            signed_headers=self.settings.auth.signed_headers,
        )

    @functools.cached_property
    def blobs(self) -> BlobStorage:
        return open_blob_store(self.settings)

    @functools.cached_property
    def committer(self) -> GroupCommitter:
        """The writer that commits accepted submissions in batches (one fsync per batch)."""
        return GroupCommitter(
            self.db, on_begin=lock_head, on_batch=self.metrics.observe_commit_batch
        )

    @functools.cached_property
    def payload(self) -> PayloadWriter:
        """Encrypts and writes submissions' blobs (one cache of court encryptors)."""
        return PayloadWriter(self.blobs, self.clock, self.metrics.observe_stage)

    @functools.cached_property
    def document_policy(self) -> DocumentPolicy:
        limits = self.settings.limits
        return DocumentPolicy(
            frozenset(limits.allowed_types), limits.max_document_bytes, limits.max_documents
        )

    @functools.cached_property
    def submissions(self) -> SubmissionStore:
        return SubmissionStore(
            db=self.db,
            verifier=self.verifier,
            payload=self.payload,
            policy=self.document_policy,
            disk_reserve=self.settings.limits.disk_reserve_bytes,
            clock=self.clock,
            committer=self.committer,
            observe=self.metrics.observe_stage,
        )

    @functools.cached_property
    def teletransmission(self) -> TeletransmissionStore:
        """The submission port's filings: one authenticated message, one sealed request."""
        return TeletransmissionStore(
            db=self.db,
            payload=self.payload,
            policy=self.document_policy,
            disk_reserve=self.settings.limits.disk_reserve_bytes,
            clock=self.clock,
            committer=self.committer,
            observe=self.metrics.observe_stage,
        )

    def role_handlers(self) -> dict[Role, RoleHandler]:
        status = StatusReporter(self.db, self.verifier, self.clock)
        return {
            Role.CODES: self.code_issuer.handle,
            Role.SUBMIT: self.submissions,
            Role.STATUS: status,
            Role.TELETRANSMISSION: self.teletransmission,
        }

    # -- teletransmission credentials ---------------------------------------------
    @functools.cached_property
    def credential_hasher(self) -> CredentialHasher:
        return CredentialHasher()

    @functools.cached_property
    def credentials(self) -> CredentialAdmin:
        """Homologated software and credentials (the CLI's `software` and `credentials`)."""
        return CredentialAdmin(
            self.db, self.clock, self.credential_hasher, self.settings.credentials.validity
        )

    @functools.cached_property
    def credential_verifier(self) -> CredentialVerifier:
        policy = self.settings.credentials
        return CredentialVerifier(
            self.db,
            self.credential_hasher,
            AuthPolicy(policy.max_failures, policy.lockout, policy.failure_delay),
            self.clock,
        )

    @functools.cached_property
    def submission_recipients(self) -> RecipientPolicy:
        """On the submission port depot@ is the one address, filed by teletransmission."""
        return RecipientPolicy(
            self.settings.gateway.domain, {Role.TELETRANSMISSION: self.settings.addresses.submit}
        )

    def expiry_notifier(self, holder: str | None = None) -> ExpiryNotifier:
        """The job mailing each credential's address before it expires (one node at a time)."""
        lease = DbLease(
            self.db,
            "credentials:expiry-notices",
            holder or new_holder_id(),
            timedelta(seconds=2 * NOTICE_INTERVAL),
            self.clock,
        )
        return ExpiryNotifier(self.db, self.clock, self.settings.credentials.expiry_notice, lease)

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
            credential_authenticator=self.recording_authenticator,
        )

    @functools.cached_property
    def smtp_limits(self) -> SmtpLimits:
        smtp, limits = self.settings.smtp, self.settings.limits
        return SmtpLimits(
            max_message_bytes=limits.max_message_bytes,
            max_recipients=limits.max_recipients,
            max_connections=smtp.max_connections,
            max_connections_per_client=smtp.max_connections_per_client,
            max_messages_per_client=smtp.max_messages_per_client,
            client_window=smtp.client_window.total_seconds(),
            max_commands=smtp.max_commands,
            idle_timeout=smtp.idle_timeout.total_seconds(),
            min_data_rate=smtp.min_data_rate,
            max_session_time=smtp.max_session_time.total_seconds(),
            data_rate_grace=smtp.data_rate_grace.total_seconds(),
        )

    def outbox_transport(self) -> Transport | None:
        """Where outgoing mail goes: a local maildir in capture mode, else (None) the relay."""
        if self.settings.relay.mode == "capture":
            return MaildirTransport(self.settings.mail_dir)
        return None

    @functools.cached_property
    def outbox(self) -> OutboxWorker:
        return OutboxWorker(
            self.db,
            self.settings.relay,
            self.clock,
            lease=self.settings.relay.lease,
            compose=self.compose_mail,
            count=self.metrics.count_delivery,
            transport=self.outbox_transport(),
            local_hostname=ehlo_name(self.settings.host_name),
        )

    @functools.cached_property
    def retention(self) -> Retention:
        return Retention(self.db, self.blobs, self.clock, self.settings.retention.days)

    @functools.cached_property
    def daily_check(self) -> DailyCheck:
        return DailyCheck(
            self.db,
            self.blobs,
            self.clock,
            operator_address=self.settings.gateway.operator_address,
            set_metrics=self.metrics.set_check,
            capture_dir=self.settings.mail_dir if self.settings.relay.mode == "capture" else None,
        )

    def backup(self) -> Backup:
        return Backup(self.db, self.blobs, self.settings.keys_dir, self.clock)

    @functools.cached_property
    def api_keys(self) -> ApiKeys:
        http = self.settings.http
        return ApiKeys(
            self.db,
            self.clock,
            ApiKeyHasher(self.server_secret),
            AuthThrottlePolicy(http.max_auth_failures, http.auth_window, http.auth_lockout),
        )

    @functools.cached_property
    def users(self) -> Users:
        """Console accounts (`gateway users`, the console's login and enrolment)."""
        console = self.settings.console
        policy = LoginPolicy(
            console.max_login_failures, console.max_address_failures,
            console.login_window, console.login_lockout,
        )  # fmt: skip
        return Users(self.db, self.clock, self.server_secret, policy, console.enrolment_ttl)

    def console(self) -> ConsoleDeps:
        """What the clerks' console calls, built in the caller's thread like the API's deps."""
        from gateway.console.app import session_key
        from gateway.console.context import ConsoleConfig, ConsoleDeps
        from gateway.console.worklist import Worklist

        settings = self.settings
        config = ConsoleConfig(
            session_key=session_key(self.server_secret),
            idle_timeout=settings.console.idle_timeout,
            session_lifetime=settings.console.session_lifetime,
            secure_cookies=settings.public_url.startswith("https://"),  # TLS here, or at a proxy
            templates_dir=settings.templates_dir / "console",
            public_url=settings.public_url,
        )
        return ConsoleDeps(
            users=self.users, worklist=Worklist(self.db, self.clock), review=self.review,
            admin=self.admin, records=self.records, api_keys=self.api_keys,
            credentials=self.credentials, db=self.db, clock=self.clock, config=config,
        )  # fmt: skip

    @functools.cached_property
    def records(self) -> Records:
        return Records(self.db, self.blobs)

    @functools.cached_property
    def wkd(self) -> WkdDirectory:
        """The gateway's public signing key, published by WKD for the receipts' From address."""
        settings = self.settings
        return WkdDirectory.for_key_file(
            sender_address(settings.gateway.domain), settings.signing_pub_file
        )

    def readiness_checks(self) -> list[ReadinessCheck]:
        """What /readyz checks; the keys are loaded now, once, and their outcome kept."""
        try:
            _ = self.composer  # the DKIM key and the signing key
            keys_problem = ""
        except GatewayError as exc:
            keys_problem = exc.message
        return [
            ReadinessCheck("database", database_reachable(self.db)),
            ReadinessCheck("blob_store", blob_store_writable(self.blobs, self.clock)),
            ReadinessCheck(
                "disk", disk_above_reserve(self.blobs, self.settings.limits.disk_reserve_bytes)
            ),
            ReadinessCheck("keys", keys_loaded(keys_problem)),
        ]

    def upgrade_database(self) -> None:
        migrate.upgrade(self.db)

    def close(self) -> None:
        """Stop what was built, last built first: the pipeline, the writer, the database."""
        if "pipeline" in self.__dict__:
            self.pipeline.close()
        if "committer" in self.__dict__:
            self.committer.close()
        if "db" in self.__dict__:
            self.db.dispose()
        if "keyring" in self.__dict__:
            self.keyring.close()  # the gpg-agent that importing a court key started


# -- IMAP ---------------------------------------------------------------------------
def mailbox_runner(
    services: Services, mailbox: ImapMailbox, seams: ImapSeams | None = None
) -> MailboxRunner:
    """The runner of one configured mailbox: its puller, its lease, how to connect."""
    seams = seams or ImapSeams()
    deps = PullerDeps(
        pipeline=services.pipeline,
        recipients=services.recipients,
        state=ImapState(services.db, services.clock, writer=services.committer),
        clock=services.clock,
    )
    lease = DbLease(
        services.db, f"imap:{mailbox.name}", seams.holder, lease_ttl(mailbox), services.clock
    )
    puller = MailboxPuller(
        mailbox,
        deps,
        lease,
        batch_size=seams.batch_size,
        concurrency=seams.concurrency or services.settings.imap.concurrency,
        strip_batch=seams.strip_batch or services.settings.imap.strip_batch,
        checkpoint=seams.checkpoint,
    )

    # One token source per runner: its cached access token outlives a connection.
    tokens = None if mailbox.auth == "password" else token_source_for(mailbox)

    async def connect() -> ImapClient:
        return await ImapClient.connect(
            mailbox,
            tokens or mailbox_password(mailbox),  # a password is read anew for each session
            resolve=seams.resolve,
            tls_context=seams.tls_context,
        )

    return MailboxRunner(puller, connect)


# -- cluster jobs -------------------------------------------------------------------
def cluster_jobs(services: Services) -> list[RunningPart]:
    """The daily purge and check: every node runs the loops, one node a day runs each job."""
    schedule, db, clock = services.schedule, services.db, services.clock

    def lease(name: str) -> DbLease:
        return DbLease(db, name, new_holder_id(), schedule.period, clock)

    retention = ClusterJob(
        "retention",
        lease("retention"),
        functools.partial(services.retention.purge, "serve:retention"),
        poll=schedule.poll,
    )
    check = ClusterJob(
        "check",
        lease("check"),
        services.daily_check.run,
        poll=schedule.poll,
        every_poll=services.daily_check.refresh,
    )
    return [LoopingPart(job.name, job.run) for job in (retention, check)]


def blob_sweeper(services: Services) -> BlobSweeper:
    """The sweep of interrupted writes' blobs, run by one node of the cluster at a time."""
    lease = DbLease(
        services.db,
        BLOB_SWEEP_LEASE,
        new_holder_id(),
        timedelta(seconds=2 * SWEEP_INTERVAL),  # held between sweeps; taken over if we die
        services.clock,
    )
    return BlobSweeper(services.db, services.blobs, services.clock, lease)


# -- serve ----------------------------------------------------------------------------
def listener_specs(
    settings: Settings,
    *,
    reuse_port: bool = False,
    authenticator: CredentialAuthenticator | None = None,
) -> list[ListenerSpec]:
    """The SMTP listeners `serve` runs.

    The inbound (MX) port, with STARTTLS given a certificate; and, given the
    `authenticator`, the submission port on `smtp.submission_listen`: AUTH
    after STARTTLS (or implicit TLS), which needs the certificate too.
    The inbound port never offers AUTH (its spec has no authenticator). The
    certificate is the configured one, else the self-signed one `gateway init` made.
    """
    smtp = settings.smtp
    tls = None
    if smtp.tls_cert and smtp.tls_key:
        tls = make_tls_context(str(smtp.tls_cert), str(smtp.tls_key))
    host, port = parse_hostport(smtp.listen)
    hostname = settings.host_name
    specs = [
        ListenerSpec(
            name="inbound",
            host=host,
            port=port,
            hostname=hostname,
            tls=TlsMode.STARTTLS if tls else TlsMode.NONE,
            tls_context=tls,
            reuse_port=reuse_port,
        )
    ]
    if authenticator is None or not smtp.submission_listen:
        return specs
    if tls is None:
        log.warning(
            "teletransmission port not started: smtp.submission_listen needs "
            "smtp.tls_cert and smtp.tls_key (TLS is mandatory before AUTH)"
        )
        return specs
    host, port = parse_hostport(smtp.submission_listen)
    implicit = smtp.submission_implicit_tls
    specs.append(
        ListenerSpec(
            name="submission",
            host=host,
            port=port,
            hostname=hostname,
            tls=TlsMode.IMPLICIT if implicit else TlsMode.STARTTLS,
            tls_context=tls,
            require_tls=not implicit,
            reuse_port=reuse_port,
            authenticator=authenticator,
        )
    )
    return specs


@dataclass
class Running:
    """What a started gateway exposes (tests read the real ports from here)."""

    stop: asyncio.Event
    ports: dict[str, int] = field(default_factory=dict)
    """Listener name (inbound, submission) -> bound port."""
    http_port: int | None = None

    @property
    def smtp_port(self) -> int:
        return self.ports["inbound"]

    @property
    def submission_port(self) -> int | None:
        """The teletransmission port, when it runs (it needs a TLS certificate)."""
        return self.ports.get("submission")


@dataclass
class Gateway:
    """The running parts of one `serve` process, in start order."""

    parts: list[RunningPart]
    listeners: list[SmtpListener]
    http: ApiServer | None


def build_gateway(
    services: Services, *, reuse_port: bool = False, serve_http: bool = True, deliver: bool = True
) -> Gateway:
    """Every running part of `serve`, with its collaborators.

    With `deliver=False` the outbox is left to an outbox process (`run_outbox`).
    Workers come first and listeners last, so that stopping in reverse order
    stops taking mail before the workers go.
    """
    settings = services.settings
    parts: list[RunningPart] = []
    on_accepted: Callable[[Outcome], None] = _nobody
    if deliver:
        parts.extend(build_outbox_parts(services))
        on_accepted = _waker(services.outbox)
    parts.append(LoopingPart("sweeper", Sweeper(services.db, services.clock).run))
    parts.append(LoopingPart("blob-sweep", blob_sweeper(services).run))
    parts.extend(cluster_jobs(services))
    parts.append(LoopingPart("credential-notices", services.expiry_notifier().run))
    for mailbox in settings.imap.mailboxes:
        parts.append(LoopingPart(f"imap:{mailbox.name}", mailbox_runner(services, mailbox).watch))
    http = None
    if serve_http:
        http = build_http(services, services.metrics.registry)
        parts.append(http)
    tracker = ClientTracker(services.smtp_limits)  # shared: limits are the gateway's, not a port's
    authenticator = CredentialAuthenticator(services.credential_verifier.authenticate)
    listeners = [
        SmtpListener(
            spec, _smtp_handler(services, spec, tracker, on_accepted), tracker, services.smtp_limits
        )
        for spec in listener_specs(settings, reuse_port=reuse_port, authenticator=authenticator)
    ]
    parts.extend(listeners)
    return Gateway(parts, listeners, http)


def build_outbox_parts(
    services: Services, interval: float = OUTBOX_POLL
) -> list[RunningPart]:
    """The outbox worker, and on PostgreSQL the LISTEN connection that wakes it.

    The worker wakes after any commit of this process that queued a mail
    (`Database.outbox_queued`). On PostgreSQL every node's worker wakes on the NOTIFY sent by the
    transaction that queued a mail (`storage/notify.py`), whichever node or
    process queued it; the poll interval is only the fallback.
    """
    outbox = services.outbox
    services.db.outbox_queued.subscribe(outbox.wake)  # mail this process queues goes at once
    if services.db.is_sqlite:
        return [LoopingPart("outbox", functools.partial(outbox.run, interval=interval))]
    listener = OutboxListener(listen_url(services.db.engine), outbox.wake)
    return [
        LoopingPart("outbox-listener", listener.run),
        LoopingPart("outbox", functools.partial(outbox.run, interval=max(interval, OUTBOX_POLL))),
    ]


def _smtp_handler(
    services: Services,
    spec: ListenerSpec,
    tracker: ClientTracker,
    on_accepted: Callable[[Outcome], None],
) -> GatewayHandler:
    """A listener's hooks: the inbound port's channel and addresses, or the submission port's."""
    submission = spec.authenticator is not None
    return GatewayHandler(
        services.pipeline,
        services.submission_recipients if submission else services.recipients,
        tracker,
        services.clock,
        channel=Channel.TELETRANSMISSION if submission else Channel.SMTP,
        on_accepted=on_accepted,
        count_message=services.metrics.count_message,
        postmaster=None if submission else services.postmaster,
    )


def build_http(services: Services, registry: CollectorRegistry) -> ApiServer:
    """The HTTP API (with /metrics from `registry`, and WKD) on `http.listen`.

    Everything it calls is built here, in this thread: its requests run in
    worker threads, which must find the services built.  FastAPI, uvicorn
    and the pages are imported here, not with this module: the commands
    that serve no HTTP (every one but `serve`) start without them, about a
    second sooner.
    """
    from gateway.api.app import create_app
    from gateway.api.context import ApiDeps
    from gateway.api.server import ApiServer, TlsFiles

    settings = services.settings
    deps = ApiDeps(
        api_keys=services.api_keys,
        admin=services.admin,
        codes=services.code_issuer,
        review=services.review,
        records=services.records,
        wkd=services.wkd,
        metrics=registry,
        readiness=services.readiness_checks(),
        max_body_bytes=settings.http.max_body_bytes,
        console=services.console(),
    )
    http = settings.http
    tls = TlsFiles(http.tls_cert, http.tls_key) if http.tls_cert and http.tls_key else None
    host, port = parse_hostport(http.listen)
    return ApiServer(
        create_app(deps), host, port, tls=tls, grace=settings.smtp.shutdown_grace.total_seconds()
    )


def build_supervisor_http(services: Services) -> ApiServer:
    """The HTTP server of `serve --workers`' parent: the API, with every process's metrics."""
    return build_http(services, multiprocess_registry())


def _nobody(outcome: Outcome) -> None:
    """`on_accepted` when this process delivers nothing: the outbox process polls."""


def _waker(outbox: OutboxWorker) -> Callable[[Outcome], None]:
    def wake(outcome: Outcome) -> None:
        outbox.wake()

    return wake


async def run_gateway(
    services: Services,
    on_ready: Callable[[Running], None] | None = None,
    *,
    reuse_port: bool = False,
    serve_http: bool = True,
    deliver: bool = True,
) -> None:
    """Build, start everything, wait for SIGTERM/SIGINT (or `Running.stop`), stop in reverse."""
    settings = services.settings
    # The event loop and the group commit's writer give the interpreter lock up at
    # every socket or SQLite call and must get it back from threads busy parsing
    # and encrypting: a shorter switch interval than Python's 5 ms shortens each wait.
    sys.setswitchinterval(SWITCH_INTERVAL)
    await asyncio.to_thread(services.upgrade_database)
    if not settings.auth.require_dkim:
        log.warning("auth.require_dkim is FALSE: senders are NOT authenticated by DKIM")
    if not settings.gateway.operator_address:
        log.warning("gateway.operator_address is not set: postmaster@ is refused (RFC 5321 4.5.1)")
    if deliver:
        warn_if_captured(settings)
        await asyncio.to_thread(lambda: services.composer)  # a bad DKIM or signing key fails now
    await asyncio.to_thread(lambda: services.pipeline)  # built off the event loop
    await asyncio.to_thread(lambda: services.postmaster)  # its composer's keys fail now
    gateway = build_gateway(services, reuse_port=reuse_port, serve_http=serve_http, deliver=deliver)
    supervisor = Supervisor(gateway.parts)
    stop = _stop_on_signals()
    try:
        await supervisor.start()
        running = Running(
            stop,
            {listener.spec.name: listener.port or 0 for listener in gateway.listeners},
            gateway.http.port if gateway.http else None,
        )
        log.info("gateway listening", extra={"ports": running.ports, "http": running.http_port})
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
        log.info("shutting down")
    finally:
        await supervisor.stop(settings.smtp.shutdown_grace.total_seconds())
        services.close()
    log.info("stopped")


def warn_if_captured(settings: Settings) -> None:
    """Say loudly, once at start, that outgoing mail is kept here instead of being relayed."""
    if settings.relay.mode == "capture":
        log.warning(
            "relay.mode is CAPTURE: outgoing mail (codes, receipts) is NOT sent; it is kept "
            "in the maildir %s (set relay.mode = \"smtp\" and a relay to send it)",
            settings.mail_dir,
        )


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Only the main thread can take signals; tests run the gateway in another one.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    return stop


async def run_outbox(services: Services, interval: float) -> None:
    """Deliver the outbox until SIGTERM/SIGINT: the outbox process of `serve`.

    Composing and signing receipts is CPU work: in a process of its own it
    does not take the accepting process's interpreter lock.
    """
    await asyncio.to_thread(services.upgrade_database)
    await asyncio.to_thread(lambda: services.composer)  # a bad DKIM or signing key fails now
    warn_if_captured(services.settings)
    stop = _stop_on_signals()
    supervisor = Supervisor(build_outbox_parts(services, interval))
    log.info("outbox process delivering")
    try:
        await supervisor.start()
        await stop.wait()
    finally:
        await supervisor.stop(services.settings.smtp.shutdown_grace.total_seconds())
        services.close()
