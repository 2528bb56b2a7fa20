"""`gateway doctor`: checks a deployment and says, one line per finding, what to do.

The checks, in order: MX, DKIM, SPF, DMARC (DNS through the configured
resolver), TLS, relay, disk, courts. Each is a function from a `Deployment`
to findings (`ok`, `warning`, `error`); a DNS lookup that gets no answer ends
its check with an error finding instead of an exception.
"""

from __future__ import annotations

from gateway.doctor.findings import (
    Check,
    Deployment,
    DnsLookups,
    Finding,
    Status,
    Unanswered,
    error,
)
from gateway.doctor.host import check_courts, check_disk, check_relay, check_tls
from gateway.doctor.records import check_dkim, check_dmarc, check_mx, check_spf

CHECKS: tuple[tuple[str, Check], ...] = (
    ("mx", check_mx),
    ("dkim", check_dkim),
    ("spf", check_spf),
    ("dmarc", check_dmarc),
    ("tls", check_tls),
    ("relay", check_relay),
    ("disk", check_disk),
    ("courts", check_courts),
)


def run_doctor(deployment: Deployment) -> list[Finding]:
    """Every check's findings, in the order of CHECKS."""
    findings: list[Finding] = []
    for name, check in CHECKS:
        try:
            findings.extend(check(deployment))
        except Unanswered as exc:
            findings.append(error(name, _unanswered(deployment, exc)))
    return findings


def _unanswered(deployment: Deployment, exc: Unanswered) -> str:
    dns = deployment.settings.dns
    servers = ", ".join(dns.nameservers) or "the system resolver"
    return (
        f"no DNS answer for {exc.name} {exc.rdtype} ({exc.reason.removeprefix('DNS lookup ')}): "
        f"check dns.nameservers ({servers}) and dns.timeout ({dns.timeout:g} s)"
    )


def summary(findings: list[Finding]) -> str:
    """The closing line: how many of each status."""
    counts = {status: sum(f.status is status for f in findings) for status in Status}
    return (
        f"doctor: {counts[Status.OK]} ok, {counts[Status.WARNING]} warning(s), "
        f"{counts[Status.ERROR]} error(s)"
    )


__all__ = ["CHECKS", "Deployment", "DnsLookups", "Finding", "Status", "run_doctor", "summary"]
