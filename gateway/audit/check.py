"""The daily consistency check: blobs and rows, audit chain, stuck requests, pulls, court keys."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.audit.chain import verify_chain
from gateway.errors import KeyRefused, NotFound
from gateway.outbox.maildir import captured_files
from gateway.settings import Settings
from gateway.storage.audit import AuditRepository, append_event
from gateway.storage.blobstore import BlobStorage
from gateway.storage.courts import CourtRepository
from gateway.storage.db import Database, Session
from gateway.storage.imap import unstripped_before
from gateway.storage.keys import encryption_expiry
from gateway.storage.requests import RequestRepository
from gateway.storage.submissions import BlobRepository

Progress = Callable[[int], None]
# A blob younger than this without a row may belong to a transaction still in flight.
ORPHAN_GRACE = timedelta(hours=1)
STUCK_AFTER = timedelta(hours=1)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Said in the report, but the check still passes: a choice of the configuration
    (postmaster@ refused, no STARTTLS, outgoing mail captured instead of sent)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem_count": len(self.problems),
            "problems": self.problems[:1000],
            "counts": self.counts,
            "warnings": self.warnings,
        }


Notify = Callable[[Session, Findings], None]
"""Called in the transaction that records the report (`serve` queues the operator's mail)."""


def configuration_warnings(settings: Settings) -> list[str]:
    """What the configuration leaves refused or in clear that the operator should know."""
    warnings = []
    if not settings.gateway.operator_address:
        warnings.append(
            f"postmaster@{settings.gateway.domain} is refused: set gateway.operator_address "
            "(RFC 5321 4.5.1 requires a postmaster)"
        )
    if settings.smtp.tls_cert is None:
        warnings.append(
            "STARTTLS is not offered on the inbound port: no certificate "
            "(run `gateway init`, or set smtp.tls_cert and smtp.tls_key)"
        )
    return warnings


def run_check(
    db: Database,
    blobs: BlobStorage,
    now: datetime,
    progress: Progress | None = None,
    *,
    notify: Notify | None = None,
    capture_dir: Path | None = None,
    warnings: Sequence[str] = (),
) -> Findings:
    """Run every check, record the report and an audit event; never raises for findings.

    `warnings` (from `configuration_warnings`) go into the report as they are.
    `capture_dir` is the maildir that keeps outgoing mail when relay.mode is
    "capture": the report then says that nothing is being sent.
    """
    findings = Findings(warnings=list(warnings))
    if capture_dir is not None:
        findings.warnings.append(
            f"relay.mode is capture: outgoing mail is NOT sent, it is kept in {capture_dir}"
        )
        findings.counts["mail_captured"] = len(captured_files(capture_dir))
    _check_blobs(db, blobs, now, findings, progress)
    with db.reading() as session:
        chain = verify_chain(AuditRepository(session))
    findings.counts["audit_events"] = chain.events
    if not chain.ok:
        findings.problems.append(f"audit chain broken at event {chain.broken_seq}: {chain.reason}")
    _check_states(db, now, findings)
    _check_court_keys(db, now, findings)
    with db.transaction() as session:
        AuditRepository(session).record_check(now, findings.ok, findings.as_dict())
        append_event(
            session,
            now,
            "check.completed",
            actor="check",
            data={"ok": findings.ok, "problems": len(findings.problems)},
        )
        if notify is not None:
            notify(session, findings)
    return findings


def _check_blobs(
    db: Database, blobs: BlobStorage, now: datetime, findings: Findings, progress: Progress | None
) -> None:
    with db.reading() as session:
        recorded = BlobRepository(session).hashes()
        purging = BlobRepository(session).purging()  # present or not: a purge is removing them
    findings.counts["blobs_recorded"] = len(recorded)
    findings.counts["blobs_purging"] = len(purging)
    on_disk = set()
    for key in blobs.iter_keys():
        on_disk.add(key)
        if key in purging:
            continue
        if key not in recorded and _age(blobs, key, now) > ORPHAN_GRACE:
            findings.problems.append(f"orphan blob {key}: no database row (interrupted write?)")
    findings.counts["blobs_on_disk"] = len(on_disk)
    gone = []
    for key, sha256 in recorded.items():
        try:
            content = blobs.read(key) if key in on_disk else None
        except NotFound:
            content = None
        if content is None:
            gone.append(key)
        elif hashlib.sha256(content).hexdigest() != sha256:
            findings.problems.append(f"blob {key} does not match its recorded SHA-256")
        if progress:
            progress(1)
    findings.problems.extend(f"blob {key} is missing" for key in _still_recorded(db, gone))


def _still_recorded(db: Database, gone: list[str]) -> list[str]:
    """Of the blobs found gone, those the database still needs: a retention purge on
    another node may have removed a request (rows and blobs) while the check ran."""
    if not gone:
        return []
    with db.reading() as session:
        recorded = BlobRepository(session).hashes()
        purging = BlobRepository(session).purging()
    return [key for key in gone if key in recorded and key not in purging]


def _age(blobs: BlobStorage, key: str, now: datetime) -> timedelta:
    try:
        return now - blobs.modified_at(key)
    except NotFound:  # removed since it was listed (a discarded write): no orphan
        return timedelta(0)


def _check_states(db: Database, now: datetime, findings: Findings) -> None:
    with db.reading() as session:
        stuck = RequestRepository(session).open_past(now - STUCK_AFTER)
        unstripped = unstripped_before(session, now - STUCK_AFTER)
    for reference in stuck:
        findings.problems.append(f"request {reference} is open past its code's expiry")
    for mailbox, folder, uid in unstripped:
        findings.problems.append(f"pulled message {mailbox}/{folder}/{uid} was never stripped")


def _check_court_keys(db: Database, now: datetime, findings: Findings) -> None:
    """Every active court key can still receive data: an expired one makes filings get 451."""
    with db.reading() as session:
        courts = CourtRepository(session)
        keys = [(court.code, key) for court in courts.all() for key in courts.keys(court.id)]
    findings.counts["court_keys"] = len(keys)
    for court, key in keys:
        try:
            expires_at = encryption_expiry(key.armored.encode())
        except KeyRefused:
            findings.problems.append(f"court {court}: key {key.fingerprint} cannot encrypt")
            continue
        if expires_at is not None and expires_at <= now:
            findings.problems.append(
                f"court {court}: key {key.fingerprint} expired on {expires_at.date().isoformat()}"
                "; its filings are refused with 451 until it is retired (add its successor, "
                f"then `gateway courts retire-key {court} {key.fingerprint}`)"
            )
