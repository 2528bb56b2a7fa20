"""`gateway init`: create whatever is missing — config, data directory, secret, keys, TLS."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings
from gateway.smtp.selfsigned import generate_key, self_signed_certificate
from gateway.storage.keys import generate_dkim_key, generate_signing_key


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    dkim_record: str = ""


def starter_config() -> str:
    return (resources.files("gateway") / "resources" / "gateway.example.toml").read_text("utf-8")


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create a file that must not exist yet, with its mode set before any byte lands."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def initialise(
    config_path: Path, environ: dict[str, str] | None = None
) -> tuple[Settings, InitReport]:
    """Create the config (never overwritten), directories, server secret, keys, TLS pair."""
    report = InitReport()
    if not config_path.exists():
        config_path.parent.mkdir(parents=True, exist_ok=True)
        write_new_file(config_path, starter_config().encode(), 0o640)
        report.created.append(f"configuration {config_path}")
    settings = load_settings(config_path, environ)
    for directory in (settings.data_dir, settings.keys_dir, settings.blob_dir):
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            report.created.append(f"directory {directory}")
    if not settings.secret_file.exists():
        write_new_file(settings.secret_file, secrets.token_hex(32).encode() + b"\n", 0o600)
        report.created.append(f"server secret {settings.secret_file}")
    if not settings.signing_key_file.exists():
        secret_key, public_key = generate_signing_key(
            f"{settings.gateway.name} <noreply@{settings.gateway.domain}>"
        )
        write_new_file(settings.signing_key_file, secret_key.encode(), 0o600)
        settings.signing_pub_file.unlink(missing_ok=True)
        write_new_file(settings.signing_pub_file, public_key.encode(), 0o644)
        report.created.append(f"signing key {settings.signing_key_file}")
    if not settings.dkim_key_file.exists():
        private_pem, public_b64 = generate_dkim_key()
        write_new_file(settings.dkim_key_file, private_pem, 0o600)
        settings.dkim_pub_file.unlink(missing_ok=True)
        write_new_file(settings.dkim_pub_file, public_b64.encode(), 0o644)
        report.created.append(f"DKIM key {settings.dkim_key_file}")
    if make_tls_certificate(settings, report):
        settings = load_settings(config_path, environ)  # the defaults now find the new pair
    report.dkim_record = dkim_record(settings)
    return settings, report


def make_tls_certificate(settings: Settings, report: InitReport) -> bool:
    """The self-signed STARTTLS pair in the keys directory, if missing; True if it was made.

    Never overwritten.  A key left without its certificate (an interrupted
    init) gets one; a certificate without its key is the operator's to sort.
    """
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert.exists() and key.exists():
        return False
    if cert.exists():
        raise ConfigError(f"{cert} has no key {key}: remove it and run `gateway init` again")
    if not key.exists():
        write_new_file(key, generate_key(), 0o600)
    name = settings.host_name
    try:
        hostname = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"smtp.hostname: {name!r} is not a host name") from None
    write_new_file(cert, self_signed_certificate(key.read_bytes(), hostname), 0o644)
    report.created.append(f"TLS certificate {cert} (self-signed for {hostname})")
    return True


def dkim_record(settings: Settings) -> str:
    """The DNS TXT record that publishes the gateway's DKIM key (zone-file syntax)."""
    try:
        public = settings.dkim_pub_file.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(
            f"DKIM public key {settings.dkim_pub_file} is unreadable (run `gateway init`)"
        ) from None
    return (
        f"{settings.dkim_selector}._domainkey.{settings.gateway.domain}. IN TXT "
        f'"v=DKIM1; k=rsa; p={public}"'
    )
