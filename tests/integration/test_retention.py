"""The retention purge end to end: real submissions, then `retention purge` and `requests hold`.

Runs on SQLite and on PostgreSQL. The requests reach their status through
the real flow where the gateway has one (etat@ CLOTURE seals), else by
setting it in the database (the greffe's review workflow is not part of
this test); their age is set by moving `updated_at` back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from gateway.audit.check import run_check
from gateway.errors import StorageUnavailable
from gateway.retention import Retention
from gateway.storage.blobstore import BlobStore
from gateway.storage.models import (
    AuditEvent,
    Blob,
    Code,
    Document,
    Outbox,
    Request,
    Submission,
)
from gateway.storage.outbox import pending_count
from tests.conftest import CliRunner
from tests.fixtures.gatewayserver import DOMAIN, World
from tests.fixtures.pdfs import plain_pdf

DAYS = 30
FILENAME = "releve-confidentiel-XQ7.pdf"
SUBJECT = "Compte annuel tres-prive-ZK9"


@dataclass
class Filing:
    reference: str
    submission: str
    blob_keys: list[str]


def _file(world: World, *, seal: bool = False) -> Filing:
    """One request with one submission (a PDF), through the real SMTP flow."""
    code = world.request_code()
    raw = world.gw.message(
        subject=f"{SUBJECT} [{code}]",
        attachments=[(FILENAME, "application/pdf", plain_pdf(filler=2000))],
    )
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    submission = reply.split()[-1]
    if seal:
        raw = world.gw.message(to=f"etat@{DOMAIN}", subject=f"CLOTURE [{code}]")
        assert world.gw.send(raw, rcpt=f"etat@{DOMAIN}")[0] == 250
    with world.gw.services.db.reading() as session:
        row = session.scalars(select(Submission).where(Submission.reference == submission)).one()
        docs = session.scalars(select(Document.blob).where(Document.submission_id == row.id))
        keys = [row.raw_blob, row.manifest_blob, *docs]
    _outbox_settled(world)  # the next code's mail is then the sink's last one
    return Filing(submission.split("/")[0], submission, keys)


def _outbox_settled(world: World, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with world.gw.services.db.reading() as session:
            if not pending_count(session):
                return
        time.sleep(0.05)
    raise AssertionError("outbox still has pending mail")


def _set(world: World, filing: Filing, status: str | None, age_days: int) -> None:
    values: dict[str, object] = {"updated_at": datetime.now(UTC) - timedelta(days=age_days)}
    if status is not None:
        values["status"] = status
    with world.gw.services.db.transaction() as session:
        session.execute(update(Request).where(Request.reference == filing.reference).values(values))


def _paths(world: World, filing: Filing) -> list[Path]:
    root = world.gw.services.settings.blob_dir
    return [root / key for key in filing.blob_keys]


def _rows_left(world: World, filing: Filing) -> dict[str, int]:
    refs = [filing.reference, filing.submission]
    with world.gw.services.db.reading() as session:
        return {
            "request": session.scalar(
                select(func.count()).select_from(Request)
                .where(Request.reference == filing.reference)
            ) or 0,
            "submission": session.scalar(
                select(func.count()).select_from(Submission)
                .where(Submission.reference == filing.submission)
            ) or 0,
            "blob": session.scalar(
                select(func.count()).select_from(Blob).where(Blob.key.in_(filing.blob_keys))
            ) or 0,
            "code": session.scalar(
                select(func.count()).select_from(Code).join(Request, Request.id == Code.request_id)
                .where(Request.reference == filing.reference)
            ) or 0,
            "outbox": session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.related_reference.in_(refs))
            ) or 0,
        }  # fmt: skip


def _purge_events(world: World) -> list[AuditEvent]:
    with world.gw.services.db.reading() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == "retention.purged")
                .order_by(AuditEvent.seq)
            )
        )  # fmt: skip


def _references(result_out: str) -> set[str]:
    return {row["reference"] for row in json.loads(result_out)}


def test_retention_purge_dry_run_then_for_real_keeps_held_recent_and_unfinished(
    world: World, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY__RETENTION__DAYS", str(DAYS))
    accepted, sealed, held = _file(world), _file(world, seal=True), _file(world)
    recent, received, still_open = _file(world, seal=True), _file(world), _file(world)
    _set(world, accepted, "accepted", DAYS + 10)
    _set(world, sealed, None, DAYS + 10)  # sealed by CLOTURE
    _set(world, held, "rejected", DAYS + 10)
    _set(world, recent, None, DAYS - 5)
    _set(world, received, "received", DAYS + 10)  # acknowledged: in the greffe's hands
    _set(world, still_open, None, DAYS + 10)
    held_result = cli("requests", "hold", held.reference)
    assert held_result.code == 0 and "held" in held_result.out

    dry = cli("retention", "purge", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert _references(dry.out) == {accepted.reference, sealed.reference}
    assert all(path.exists() for f in (accepted, sealed) for path in _paths(world, f))
    assert _purge_events(world) == []

    real = cli("retention", "purge", "--json")
    assert real.code == 0, real.err
    assert _references(real.out) == {accepted.reference, sealed.reference}
    for gone in (accepted, sealed):
        assert not any(path.exists() for path in _paths(world, gone))
        assert set(_rows_left(world, gone).values()) == {0}, gone.reference
    for kept in (held, recent, received, still_open):
        assert all(path.exists() for path in _paths(world, kept))
        assert _rows_left(world, kept)["submission"] == 1
    events = _purge_events(world)
    assert {event.subject for event in events} == {accepted.reference, sealed.reference}
    for event in events:
        assert event.data["submissions"] == [f"{event.subject}/1"]
        assert event.data["blobs"] == 3
        text = json.dumps(event.data)
        assert FILENAME not in text and SUBJECT not in text
    assert cli("check").code == 0
    assert cli("audit", "verify").code == 0

    # Released, the held request goes at the next purge.
    assert cli("requests", "unhold", held.reference).code == 0
    assert _references(cli("retention", "purge", "--json").out) == {held.reference}
    assert not any(path.exists() for path in _paths(world, held))


def test_retention_days_zero_purges_nothing(world: World, cli: CliRunner) -> None:
    filing = _file(world)
    _set(world, filing, "accepted", 4000)
    result = cli("retention", "purge")
    assert result.code == 0
    assert "kept forever" in result.err
    assert all(path.exists() for path in _paths(world, filing))


class BlobStoreDown(BlobStore):
    """The directory store, but deletes fail: the store went away mid-purge."""

    def delete(self, key: str) -> bool:
        raise StorageUnavailable("blob store unavailable")


def test_retention_purge_interrupted_before_blobs_finishes_next_time(
    world: World, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = world.gw.services
    filing = _file(world)
    _set(world, filing, "accepted", DAYS + 1)
    down = Retention(services.db, BlobStoreDown(services.settings.blob_dir), services.clock, DAYS)
    with pytest.raises(StorageUnavailable):
        down.purge("test")

    # The rows are gone and the blob rows marked: no row points at a missing blob, and
    # the blobs still on disk are neither orphans nor missing for the check.
    assert _rows_left(world, filing)["submission"] == 0
    assert _rows_left(world, filing)["blob"] == 3
    assert all(path.exists() for path in _paths(world, filing))
    findings = run_check(services.db, services.blobs, services.clock() + timedelta(hours=2))
    assert findings.ok, findings.problems
    assert findings.counts["blobs_purging"] == 3

    monkeypatch.setenv("GATEWAY__RETENTION__DAYS", str(DAYS))
    result = cli("retention", "purge")
    assert result.code == 0, result.err
    assert "0 request(s) purged, 3 blob(s) deleted" in result.err
    assert not any(path.exists() for path in _paths(world, filing))
    assert _rows_left(world, filing)["blob"] == 0
    assert cli("check").code == 0


def test_requests_hold_unknown_reference_refused(world: World, cli: CliRunner) -> None:
    result = cli("requests", "hold", "TJ-LYON-2026-999999")
    assert result.code == 1
    assert "no request TJ-LYON-2026-999999" in result.err


class PurgedWhileListed(BlobStore):
    """The directory store; listing it first lets another node's retention purge run."""

    def __init__(self, root: Path, purge: Retention) -> None:
        super().__init__(root)
        self.purge = purge

    def iter_keys(self) -> Iterator[str]:
        self.purge.purge("other-node")  # rows and blobs go after the check read its rows
        yield from super().iter_keys()


def test_check_racing_a_purge_on_another_node_reports_nothing_missing(world: World) -> None:
    services = world.gw.services
    filing = _file(world)
    _set(world, filing, "accepted", DAYS + 1)
    purge = Retention(services.db, services.blobs, services.clock, DAYS)
    racing = PurgedWhileListed(services.settings.blob_dir, purge)
    findings = run_check(services.db, racing, services.clock())
    assert not any(path.exists() for path in _paths(world, filing))  # the purge did run
    assert findings.ok, findings.problems


def test_check_names_a_blob_that_is_really_missing(world: World) -> None:
    services = world.gw.services
    filing = _file(world)
    key = filing.blob_keys[0]
    (services.settings.blob_dir / key).unlink()
    findings = run_check(services.db, services.blobs, services.clock())
    assert findings.problems == [f"blob {key} is missing"]
