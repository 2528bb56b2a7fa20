"""The doctor's checks of this host: TLS certificate, relay, free disk, court keys."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from gateway.doctor.findings import (
    WINDOW,
    Deployment,
    Finding,
    error,
    ok,
    smtp_hostname,
    warning,
)
from gateway.errors import GatewayError, KeyRefused
from gateway.escaping import printable
from gateway.outbox.worker import relay_tls_context
from gateway.storage.courts import CourtRepository
from gateway.storage.keys import inspect_public_key

_GIB = 1024**3


def check_tls(deployment: Deployment) -> list[Finding]:
    """The STARTTLS certificate parses, matches its key, covers the host name, lasts 30 days."""
    smtp = deployment.settings.smtp
    host = smtp_hostname(deployment.settings)
    if smtp.tls_cert is None or smtp.tls_key is None:
        return [
            error(
                "tls",
                "no certificate (smtp.tls_cert is empty): STARTTLS is not offered "
                f"and mail arrives in clear; set smtp.tls_cert and smtp.tls_key for {host}",
            )
        ]
    try:
        leaf = x509.load_pem_x509_certificates(smtp.tls_cert.read_bytes())[0]
    except OSError as exc:
        return [error("tls", f"cannot read smtp.tls_cert {smtp.tls_cert}: {exc.strerror}")]
    except ValueError:
        return [error("tls", f"smtp.tls_cert {smtp.tls_cert} holds no PEM certificate")]
    mismatch = _key_problem(smtp.tls_cert, smtp.tls_key)
    findings = [mismatch] if mismatch else []
    names = _dns_names(leaf)
    if not any(_covers(name, host) for name in names):
        listed = ", ".join(printable(name, 60) for name in names[:5]) or "no DNS name"
        findings.append(
            error(
                "tls",
                f"the certificate is for {listed}, not {host}: get one "
                f"whose subjectAltName includes {host}",
            )
        )
    findings.extend(_validity(leaf, deployment.now))
    return findings or [
        ok(
            "tls",
            f"certificate for {host} valid until {leaf.not_valid_after_utc.date().isoformat()}",
        )
    ]


def _key_problem(cert: Path, key: Path) -> Finding | None:
    """Load the pair as the listener will, so a key of another certificate shows now."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except ssl.SSLError:
        return error("tls", f"smtp.tls_key {key} is not the key of smtp.tls_cert {cert}")
    except OSError as exc:
        return error("tls", f"cannot read smtp.tls_key {key}: {exc.strerror}")
    return None


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []  # clients ignore the subject CN (RFC 6125): no SAN, no name
    return [str(name) for name in extension.value.get_values_for_type(x509.DNSName)]


def _covers(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard standing for the whole left-most label."""
    pattern = pattern.strip().rstrip(".").lower()
    if pattern == host:
        return True
    first, _, parent = host.partition(".")
    return pattern.startswith("*.") and bool(first) and pattern[2:] == parent


def _validity(cert: x509.Certificate, now: datetime) -> list[Finding]:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    until = not_after.date().isoformat()
    if not_before > now:
        return [
            error(
                "tls",
                f"the certificate is not valid before "
                f"{not_before.date().isoformat()}: check the clock or the certificate",
            )
        ]
    if not_after <= now:
        return [error("tls", f"the certificate expired on {until}: renew it")]
    if not_after - now < WINDOW:
        days = round((not_after - now) / timedelta(days=1))
        return [error("tls", f"the certificate expires on {until}, in {days} days: renew it")]
    return []


def check_relay(deployment: Deployment) -> list[Finding]:
    """The relay greets with 220 within `relay.timeout`; skipped when outgoing mail is captured."""
    relay = deployment.settings.relay
    if relay.mode == "capture":
        return [
            ok(
                "relay",
                "relay.mode is capture: outgoing mail stays on this host, no relay to check",
            )
        ]
    where = f"{relay.host}:{relay.port}"
    client = (
        smtplib.SMTP_SSL(context=relay_tls_context(), timeout=relay.timeout)
        if relay.implicit_tls
        else smtplib.SMTP(timeout=relay.timeout)
    )
    try:
        code, banner = client.connect(relay.host, relay.port)
        if code == 220:
            client.quit()
    except (OSError, smtplib.SMTPException) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return [
            error(
                "relay",
                f"relay {where} does not answer ({printable(reason, 80)}): "
                "start it, or fix relay.host and relay.port",
            )
        ]
    finally:
        client.close()
    greeting = printable(banner.decode("utf-8", "replace"), 80)
    if code != 220:
        return [
            error(
                "relay",
                f"relay {where} greets with {code} {greeting}: it will not take "
                "the gateway's mail; check the relay",
            )
        ]
    return [ok("relay", f"relay {where} answers: 220 {greeting}")]


def check_disk(deployment: Deployment) -> list[Finding]:
    """Free space where blobs are written is above `limits.disk_reserve_bytes` (twice, ideally)."""
    reserve = deployment.settings.limits.disk_reserve_bytes
    free = deployment.blobs.free_bytes()
    where = deployment.settings.data_dir
    said = f"{_size(free)} free for {where}"
    if free < reserve:
        return [
            error(
                "disk",
                f"{said}, below limits.disk_reserve_bytes ({_size(reserve)}): "
                "every message is refused with 452 4.3.1; free space or grow the disk",
            )
        ]
    if free < 2 * reserve:
        return [
            warning(
                "disk",
                f"{said}, less than twice the reserve ({_size(reserve)}): "
                "free space before mail is refused",
            )
        ]
    return [ok("disk", f"{said} (reserve {_size(reserve)})")]


def _size(count: int) -> str:
    return f"{count / _GIB:.1f} GiB" if count >= _GIB else f"{count / 1024**2:.1f} MiB"


# (fingerprint, armoured key, primary key expiry) of one active key
_Key = tuple[str, str, datetime | None]


def check_courts(deployment: Deployment) -> list[Finding]:
    """Every court has an active key; each can encrypt now and still can in 30 days."""
    try:
        with deployment.db.reading() as session:
            repository = CourtRepository(session)
            courts = [
                (
                    court.code,
                    [(k.fingerprint, k.armored, k.expires_at) for k in repository.keys(court.id)],
                )
                for court in repository.all()
            ]
    except GatewayError:  # StorageUnavailable: the database is down or not initialised
        return [
            error(
                "courts",
                "cannot read the courts from the database: check "
                "database.url, then run `gateway db upgrade`",
            )
        ]
    if not courts:
        return [
            warning(
                "courts",
                "no court yet: add one with `gateway courts add CODE --name "
                "NAME`, then its key with `gateway courts add-key CODE KEY.asc`",
            )
        ]
    findings: list[Finding] = []
    for code, keys in courts:
        findings.extend(_court_findings(code, keys, deployment.now))
    return findings


def _court_findings(code: str, keys: Sequence[_Key], now: datetime) -> list[Finding]:
    command = f"`gateway courts add-key {code} KEY.asc`"
    if not keys:
        return [
            error(
                "courts",
                f"court {code} has no active key, so mail for it cannot be "
                f"stored: add one with {command}",
            )
        ]
    problems = [
        error(
            "courts",
            f"court {code}: {problem}: add its successor with {command}, then retire it "
            f"with `gateway courts retire-key {code} {key[0]}`",
        )
        for key in keys
        if (problem := _key_problem_at(key, now))
    ]
    if problems:
        return problems
    expiries = [expires for _, _, expires in keys if expires is not None]
    first = f", the first expires on {min(expiries).date().isoformat()}" if expiries else ""
    return [ok("courts", f"court {code}: {len(keys)} active key(s), all can encrypt{first}")]


def _key_problem_at(key: _Key, now: datetime) -> str | None:
    """Why the key cannot encrypt now or in 30 days (the same inspection `add-key` does)."""
    fingerprint, armored, expires = key
    try:
        inspect_public_key(armored.encode(), now=now)
    except KeyRefused as exc:
        return exc.message
    try:
        inspect_public_key(armored.encode(), now=now + WINDOW)
    except KeyRefused:
        # The primary key's expiry is recorded; an encryption subkey's is not.
        when = (
            f"it expires on {expires.date().isoformat()}"
            if expires is not None and expires < now + WINDOW
            else "its encryption subkey expires"
        )
        return f"key {fingerprint} stops encrypting within 30 days ({when})"
    return None
