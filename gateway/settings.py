"""Typed settings: one TOML file plus GATEWAY__SECTION__KEY overrides, validated once."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError

DEFAULT_CONFIG = Path("config/gateway.toml")
ENV_CONFIG = "GATEWAY_CONFIG"
ENV_PREFIX = "GATEWAY__"
TLS_CERT_NAME = "smtp-tls-cert.pem"
TLS_KEY_NAME = "smtp-tls-key.pem"
"""The self-signed pair `gateway init` makes in the keys directory (STARTTLS by default)."""

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Accept "90s", "30m", "48h", "2d" or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"expected a duration like '90s', '30m', '48h' or '2d', got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"expected host:port, got {value!r}")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(Section):
    domain: str = "greffe.example"
    data_dir: Path = Path("var")
    name: str = "Passerelle du greffe"
    operator_address: str = ""
    """Where postmaster@ mail is forwarded and the daily check's reports go; empty:
    postmaster@ is refused (550 5.1.1) and nobody is mailed."""
    pin_cpu: bool = True
    """Keep each process of `serve` (and `imap pull`) to one CPU (`gateway.affinity`)."""

    @field_validator("operator_address")
    @classmethod
    def _operator(cls, value: str) -> str:
        text = value.strip()
        if text and not re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", text):
            raise ValueError(f"expected an address like ops@example.org, got {value!r}")
        return text


class DatabaseSection(Section):
    url: SecretStr = SecretStr("sqlite:///var/gateway.db")
    pool_size: int = Field(default=32, ge=1, le=1000)
    """Connections each gateway process keeps open (`storage.db.POOL_SIZE`); up to 8 more
    are opened under a burst and closed after use."""


class SmtpSection(Section):
    listen: str = "127.0.0.1:2525"
    submission_listen: str = "127.0.0.1:2587"
    submission_implicit_tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    hostname: str = ""
    max_connections: int = Field(default=100, ge=1)
    max_connections_per_client: int = Field(default=10, ge=1)
    max_messages_per_client: int = Field(default=100, ge=1)
    client_window: Duration = timedelta(minutes=10)
    max_commands: int = Field(default=200, ge=10)
    """Commands in one session, whatever their verb (then 421 4.7.0)."""
    max_session_time: Duration = timedelta(minutes=10)
    """A session's whole lifetime, greeting to close (then 421 4.7.0)."""
    idle_timeout: Duration = timedelta(seconds=300)
    min_data_rate: int = Field(default=20_000, ge=1)
    """Bytes a second DATA must average once `data_rate_grace` is over (then 421 4.4.2)."""
    data_rate_grace: Duration = timedelta(seconds=10)
    shutdown_grace: Duration = timedelta(seconds=30)

    @field_validator("listen", "submission_listen")
    @classmethod
    def _hostport(cls, value: str, info: ValidationInfo) -> str:
        if value == "" and info.field_name == "submission_listen":  # "" turns the port off
            return value
        parse_hostport(value)
        return value

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        return None if value in ("", None) else value


class AddressesSection(Section):
    codes: str = "codes"
    submit: str = "depot"
    status: str = "etat"


class RelaySection(Section):
    # "capture" keeps outgoing mail in a local maildir instead of relaying it
    # (demos, the starter config); `gateway doctor` then skips the relay check.
    mode: Literal["smtp", "capture"] = "smtp"
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    implicit_tls: bool = False
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout: float = Field(default=30.0, gt=0)
    give_up_after: Duration = timedelta(days=3)
    max_backoff: Duration = timedelta(hours=1)
    lease: Duration = timedelta(minutes=10)
    """How long a worker holds the outbox rows it claimed (a dead node's rows wait this long)."""


class DnsSection(Section):
    nameservers: list[str] = []
    timeout: float = Field(default=5.0, gt=0)

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        for server in value:
            parse_hostport(server, default_port=53)
        return value


_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII but ':'


class AuthSection(Section):
    require_dkim: bool = True
    signed_headers: list[str] = ["from", "subject"]
    """Headers a DKIM signature must sign to count (the code travels in the Subject)."""

    @field_validator("signed_headers")
    @classmethod
    def _header_names(cls, value: list[str]) -> list[str]:
        names = [name.strip().lower() for name in value]
        for name in names:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"not a header name: {name!r}")
        if "from" not in names:
            raise ValueError("must include from (RFC 6376 requires From to be signed)")
        return list(dict.fromkeys(names))


class CodesSection(Section):
    ttl: Duration = timedelta(hours=48)
    max_failures: int = Field(default=5, ge=1)
    lockout: Duration = timedelta(minutes=15)
    max_requests_per_day: int = Field(default=10, ge=1)


class CredentialsSection(Section):
    validity: Duration = timedelta(days=730)
    expiry_notice: Duration = timedelta(days=30)
    """How long before a credential expires its address is told so (once)."""
    max_failures: int = Field(default=5, ge=1)
    """Failed AUTHs per address and per client before they are locked out (454 4.7.0)."""
    lockout: Duration = timedelta(minutes=15)
    """The first lock-out; each new one lasts twice as long."""
    failure_delay: Duration = timedelta(seconds=1)
    """The wait before a failed AUTH is answered; doubles with each failure counted."""


class LimitsSection(Section):
    max_message_bytes: int = Field(default=26_214_400, ge=1024)
    large_message_bytes: int = Field(default=4_194_304, ge=1024)
    max_recipients: int = Field(default=10, ge=1)
    max_documents: int = Field(default=30, ge=1)
    max_document_bytes: int = Field(default=26_214_400, ge=1)
    max_mime_depth: int = Field(default=10, ge=1)
    max_mime_parts: int = Field(default=200, ge=1)
    max_headers: int = Field(default=500, ge=10)
    disk_reserve_bytes: int = Field(default=1_073_741_824, ge=0)
    allowed_types: list[str] = [
        "application/pdf",
        "image/png",
        "image/jpeg",
        "image/tiff",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "text/plain",
    ]


class HttpSection(Section):
    listen: str = "127.0.0.1:8025"
    tls_cert: Path | None = None
    """PEM certificate chain; with tls_key the API is served over HTTPS (else loopback only)."""
    tls_key: Path | None = None
    max_body_bytes: int = Field(default=10_485_760, ge=1024)
    """The largest request body accepted (a registrations CSV import is the largest)."""
    max_auth_failures: int = Field(default=10, ge=1)
    """Failed API-key authentications from one address within auth_window before a lock-out."""
    auth_window: Duration = timedelta(minutes=15)
    auth_lockout: Duration = timedelta(minutes=5)
    """The first lock-out; each next one lasts twice as long."""
    public_url: str = ""
    """How people reach this listener (`https://greffe.example`), for the links the gateway
    prints (console enrolment); empty: http(s)://<http.listen>."""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        if text and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/-]*)?", text):
            raise ValueError(f"expected a URL like https://greffe.example, got {value!r}")
        return text

    @field_validator("listen")
    @classmethod
    def _hostport(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        return None if value in ("", None) else value


class ConsoleSection(Section):
    """The clerks' web console (`gateway.console`): sessions, enrolment, login throttling."""

    idle_timeout: Duration = timedelta(minutes=30)
    """A session unused this long is closed (the clerk logs in again)."""
    session_lifetime: Duration = timedelta(hours=12)
    """A session is closed this long after its login, however busy."""
    enrolment_ttl: Duration = timedelta(hours=24)
    """How long an enrolment link printed by `gateway users add` stays valid."""
    max_login_failures: int = Field(default=5, ge=1)
    """Failed logins for one account within login_window before it is locked."""
    max_address_failures: int = Field(default=20, ge=1)
    """Failed logins from one client address within login_window before it is locked."""
    login_window: Duration = timedelta(minutes=15)
    login_lockout: Duration = timedelta(minutes=15)
    """The first lock-out; each next one lasts twice as long."""


class LoggingSection(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    """text: one readable line per event; json: one JSON object per line."""


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART_RE = re.compile(r"[A-Za-z0-9_.-]+")
_REGION_RE = re.compile(r"[a-z0-9-]{1,32}")
_ENDPOINT_RE = re.compile(r"(https?)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?")


def endpoint_host(endpoint: str) -> tuple[str, str]:
    """The scheme and host of an S3 endpoint URL (``http(s)://host[:port]``, nothing else)."""
    match = _ENDPOINT_RE.fullmatch(endpoint)
    if not match:
        raise ValueError(f"expected http(s)://host[:port], got {endpoint!r}")
    return match.group(1), match.group(2).strip("[]")


class BlobsSection(Section):
    """Where blobs are kept: a local directory (``data_dir/blobs``) or an S3 bucket."""

    backend: Literal["dir", "s3"] = "dir"
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    secret_key_file: Path | None = None
    addressing_style: Literal["path", "virtual"] = "path"
    ca_file: Path | None = None
    timeout: float = Field(default=5.0, gt=0, le=300)
    max_attempts: int = Field(default=3, ge=1, le=10)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value:
            endpoint_host(value)
        return value.rstrip("/")

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if value and not _BUCKET_RE.fullmatch(value):
            raise ValueError("expected an S3 bucket name (3-63 of a-z 0-9 . -)")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION_RE.fullmatch(value):
            raise ValueError("expected a region name such as 'eu-west-3'")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        parts = value.strip("/").split("/") if value.strip("/") else []
        for part in parts:
            if part in (".", "..") or not _PREFIX_PART_RE.fullmatch(part):
                raise ValueError("expected folder names of A-Z a-z 0-9 _ . - joined by '/'")
        return "/".join(parts)

    @field_validator("secret_key_file", "ca_file", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        return None if value in ("", None) else value


class RetentionSection(Section):
    days: int = Field(default=0, ge=0)
    """Requests whose final status is older than this many days are purged; 0 = keep forever."""


MIN_IMAP_LEASE = timedelta(seconds=5)


class ImapMailbox(Section):
    name: str
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["ssl", "starttls", "none"] = "ssl"
    username: str
    password: SecretStr = SecretStr("")
    password_file: Path | None = None
    folders: list[str] = ["INBOX"]
    quarantine: str = "Quarantine"
    mode: Literal["ingest", "scrub"] = "ingest"
    allow_private: bool = False
    poll_interval: Duration = timedelta(seconds=60)
    lease: Duration | None = None
    """How long a node holds the mailbox between renewals, so one node pulls it at a
    time; a killed node's mailbox waits this long. Default: three polls, at least 5 min."""
    auth: Literal["password", "xoauth2", "oauthbearer"] = "password"
    """How to log in: LOGIN with the password, or AUTHENTICATE with an OAuth2 access token."""
    token_endpoint: str = ""
    """OAuth2 token endpoint for the refresh-token grant (https; http only on loopback)."""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    client_secret_file: Path | None = None
    refresh_token_file: Path | None = None
    """Holds the refresh token; a rotated one is written back here (0600)."""
    scope: str = ""
    token_command: list[str] = []
    """Instead of the grant: a program (argv, no shell) printing an access token on stdout."""
    token_timeout: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _lease_outlasts_polls(self) -> ImapMailbox:
        # Renewed once per pass: it must outlast a wait for news (IDLE or poll) and a pass.
        if self.lease is not None and self.lease < max(3 * self.poll_interval, MIN_IMAP_LEASE):
            raise ValueError(
                f"lease: must be at least three times poll_interval and at least "
                f"{MIN_IMAP_LEASE.total_seconds():.0f}s (it is renewed once per pass)"
            )
        return self

    @field_validator("password_file", "client_secret_file", "refresh_token_file", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        return None if value in ("", None) else value


_TOKEN_KEYS = (
    "token_endpoint",
    "client_id",
    "client_secret",
    "client_secret_file",
    "refresh_token_file",
    "scope",
    "token_command",
)


def mailbox_auth_problem(mailbox: ImapMailbox) -> str:
    """What is wrong with a mailbox's credentials, as "key: reason"; empty when nothing is.

    Also checked where a mailbox is used (a mailbox built in code skips `load_settings`).
    """
    given = [key for key in _TOKEN_KEYS if _is_set(getattr(mailbox, key))]
    if mailbox.auth == "password":
        return f"{given[0]}: only used with auth = xoauth2 or oauthbearer" if given else ""
    if mailbox.password.get_secret_value() or mailbox.password_file:
        key = "password" if mailbox.password.get_secret_value() else "password_file"
        return f"{key}: not used with auth = {mailbox.auth} (a token source replaces it)"
    if mailbox.token_command:
        grant = [key for key in given if key != "token_command"]
        return f"{grant[0]}: not used with token_command" if grant else ""
    for key in ("token_endpoint", "client_id", "refresh_token_file"):
        if not _is_set(getattr(mailbox, key)):
            return (
                f"{key}: auth = {mailbox.auth} needs a token source: token_endpoint, "
                "client_id and refresh_token_file, or token_command"
            )
    if mailbox.client_secret.get_secret_value() and mailbox.client_secret_file:
        return "client_secret_file: give client_secret or client_secret_file, not both"
    return _endpoint_problem(mailbox.token_endpoint)


def _endpoint_problem(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    if scheme == "https" and host:
        return ""
    if scheme == "http" and is_loopback(host):
        return ""
    return "token_endpoint: expected an https:// URL (http:// only for a loopback host)"


def _is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return bool(value)


class ImapSection(Section):
    concurrency: int = Field(default=8, ge=1, le=64)
    """Messages of one mailbox in the pipeline at once."""
    strip_batch: int = Field(default=8, ge=1, le=256)
    """Accepted messages stubbed together: one `stored` commit, their APPENDs, one expunge."""
    mailboxes: list[ImapMailbox] = []


class Settings(Section):
    """The whole configuration; paths already resolved against the file's folder."""

    gateway: GatewaySection = GatewaySection()
    database: DatabaseSection = DatabaseSection()
    smtp: SmtpSection = SmtpSection()
    addresses: AddressesSection = AddressesSection()
    relay: RelaySection = RelaySection()
    dns: DnsSection = DnsSection()
    auth: AuthSection = AuthSection()
    codes: CodesSection = CodesSection()
    credentials: CredentialsSection = CredentialsSection()
    limits: LimitsSection = LimitsSection()
    http: HttpSection = HttpSection()
    console: ConsoleSection = ConsoleSection()
    logging: LoggingSection = LoggingSection()
    retention: RetentionSection = RetentionSection()
    blobs: BlobsSection = BlobsSection()
    imap: ImapSection = ImapSection()

    config_path: Path | None = None

    @property
    def host_name(self) -> str:
        """The gateway's own host name: the SMTP greeting, and its EHLO to the relay."""
        return self.smtp.hostname or self.gateway.domain

    # Derived locations inside the data directory.
    @property
    def data_dir(self) -> Path:
        return self.gateway.data_dir

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def mail_dir(self) -> Path:
        """The maildir that keeps outgoing mail when relay.mode is "capture"."""
        return self.data_dir / "mail"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def secret_file(self) -> Path:
        return self.keys_dir / "server-secret"

    @property
    def signing_key_file(self) -> Path:
        return self.keys_dir / "signing-key.asc"

    @property
    def signing_pub_file(self) -> Path:
        return self.keys_dir / "signing-key.pub.asc"

    @property
    def dkim_key_file(self) -> Path:
        return self.keys_dir / "dkim-private.pem"

    @property
    def dkim_pub_file(self) -> Path:
        return self.keys_dir / "dkim-public.txt"

    @property
    def tls_cert_file(self) -> Path:
        """The self-signed STARTTLS certificate `gateway init` makes (used unless configured)."""
        return self.keys_dir / TLS_CERT_NAME

    @property
    def tls_key_file(self) -> Path:
        return self.keys_dir / TLS_KEY_NAME

    @property
    def dkim_selector(self) -> str:
        return "greffe"

    @property
    def templates_dir(self) -> Path:
        base = self.config_path.parent if self.config_path else Path("config")
        return base / "templates"

    @property
    def public_url(self) -> str:
        """The base URL of the HTTP listener for printed links (`http.public_url`, else listen)."""
        if self.http.public_url:
            return self.http.public_url
        scheme = "https" if self.http.tls_cert else "http"
        return f"{scheme}://{self.http.listen}"

    def address(self, role: Literal["codes", "submit", "status"]) -> str:
        return f"{getattr(self.addresses, role)}@{self.gateway.domain}"


def _env_value(text: str) -> Any:
    """Read an override as a TOML value when it is one, else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Overlay GATEWAY__SECTION__KEY variables onto the parsed file."""
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"{name}: expected GATEWAY__<SECTION>__<KEY>")
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"{name}: {parts[0]} is not a section")
        section[parts[1]] = _env_value(text)
    return data


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    def rel(path: Path) -> Path:
        return path if path.is_absolute() else (base / path)

    url = settings.database.url.get_secret_value()
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
        url = prefix + str(rel(Path(url[len(prefix) :])))
    data_dir = rel(settings.gateway.data_dir)
    tls_cert, tls_key = _tls_files(settings.smtp, rel, data_dir / "keys")
    smtp = settings.smtp.model_copy(update={"tls_cert": tls_cert, "tls_key": tls_key})

    def rel_or_none(path: Path | None) -> Path | None:
        return rel(path) if path else None

    http = settings.http.model_copy(
        update={
            "tls_cert": rel_or_none(settings.http.tls_cert),
            "tls_key": rel_or_none(settings.http.tls_key),
        }
    )
    blobs = settings.blobs.model_copy(
        update={
            "secret_key_file": rel_or_none(settings.blobs.secret_key_file),
            "ca_file": rel_or_none(settings.blobs.ca_file),
        }
    )
    mailboxes = [
        m.model_copy(
            update={
                "password_file": rel_or_none(m.password_file),
                "client_secret_file": rel_or_none(m.client_secret_file),
                "refresh_token_file": rel_or_none(m.refresh_token_file),
            }
        )
        for m in settings.imap.mailboxes
    ]
    return settings.model_copy(
        update={
            "gateway": settings.gateway.model_copy(update={"data_dir": data_dir}),
            "database": settings.database.model_copy(update={"url": SecretStr(url)}),
            "smtp": smtp,
            "blobs": blobs,
            "http": http,
            "imap": settings.imap.model_copy(update={"mailboxes": mailboxes}),
        }
    )


def _tls_files(
    smtp: SmtpSection, rel: Callable[[Path], Path], keys_dir: Path
) -> tuple[Path | None, Path | None]:
    """The inbound STARTTLS certificate and key.

    Configured ones win; `tls_cert = ""` (or `tls_key = ""`) means none; with
    neither key in the file, the pair `gateway init` generated in the keys
    directory, if it is there.
    """
    if {"tls_cert", "tls_key"} & smtp.model_fields_set:
        return (
            rel(smtp.tls_cert) if smtp.tls_cert else None,
            rel(smtp.tls_key) if smtp.tls_key else None,
        )
    cert, key = keys_dir / TLS_CERT_NAME, keys_dir / TLS_KEY_NAME
    return (cert, key) if cert.is_file() and key.is_file() else (None, None)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return f"invalid configuration: {key}: {message}"


def _check_semantics(settings: Settings) -> None:
    for mailbox in settings.imap.mailboxes:
        if mailbox.tls == "none" and not is_loopback(mailbox.host):
            raise ConfigError(
                f"invalid configuration: imap.mailboxes[{mailbox.name}].tls: "
                "'none' is allowed only for a loopback host"
            )
        problem = mailbox_auth_problem(mailbox)
        if problem:
            raise ConfigError(f"invalid configuration: imap.mailboxes[{mailbox.name}].{problem}")
    if bool(settings.smtp.tls_cert) != bool(settings.smtp.tls_key):
        raise ConfigError("invalid configuration: smtp.tls_cert and smtp.tls_key go together")
    operator = settings.gateway.operator_address
    if operator.rpartition("@")[2].lower().rstrip(".") == settings.gateway.domain.lower():
        raise ConfigError(
            "invalid configuration: gateway.operator_address: must be outside gateway.domain "
            "(postmaster@ mail forwarded there would come back to the gateway)"
        )
    if settings.blobs.backend == "s3":
        _check_s3(settings.blobs)
    _check_http(settings.http)


def _check_http(http: HttpSection) -> None:
    if bool(http.tls_cert) != bool(http.tls_key):
        raise ConfigError("invalid configuration: http.tls_cert and http.tls_key go together")
    host, _port = parse_hostport(http.listen)
    if not http.tls_cert and not is_loopback(host):
        raise ConfigError(
            "invalid configuration: http.listen: plain HTTP is allowed only on a loopback "
            "address; set http.tls_cert and http.tls_key to listen elsewhere"
        )


def _check_s3(blobs: BlobsSection) -> None:
    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"invalid configuration: {reason}")

    if not blobs.bucket:
        raise refuse("blobs.bucket: required when blobs.backend is 's3'")
    if blobs.endpoint:
        scheme, host = endpoint_host(blobs.endpoint)
        if scheme == "http" and not is_loopback(host):
            raise refuse("blobs.endpoint: plain http is allowed only for a loopback host")
    has_secret = bool(blobs.secret_key.get_secret_value())
    if has_secret and blobs.secret_key_file:
        raise refuse("blobs.secret_key and blobs.secret_key_file: give one, not both")
    if blobs.access_key and not (has_secret or blobs.secret_key_file):
        raise refuse("blobs.secret_key: required with blobs.access_key (or secret_key_file)")
    if (has_secret or blobs.secret_key_file) and not blobs.access_key:
        raise refuse("blobs.access_key: required with a secret key")


def load_settings(
    path: Path | None, environ: dict[str, str] | None = None, *, must_exist: bool = True
) -> Settings:
    """Read, override from the environment, validate and resolve relative paths."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    config_path = resolve_config_path(path, env)
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid configuration file {config_path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {config_path}: {exc.strerror}") from None
    elif must_exist:
        raise ConfigError(f"configuration file {config_path} not found (run `gateway init`)")
    data = apply_env(data, env)
    try:
        settings = Settings.model_validate({**data, "config_path": config_path.resolve()})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    settings = _resolve_paths(settings, config_path.resolve().parent)
    _check_semantics(settings)
    return settings


def resolve_config_path(path: Path | None, environ: dict[str, str]) -> Path:
    """--config wins, then $GATEWAY_CONFIG, then config/gateway.toml."""
    if path is not None:
        return path
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG])
    return DEFAULT_CONFIG
