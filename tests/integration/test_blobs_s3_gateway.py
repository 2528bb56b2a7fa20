"""A gateway whose blobs live in S3 (a real SeaweedFS): accept, check, export; 451 when S3 dies."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.audit.check import run_check
from gateway.cli.main import main
from gateway.storage.models import Blob, Document, Submission
from gateway.storage.s3blobs import S3BlobStore
from tests.fixtures.gatewayserver import COURT, GatewayFactory, World, make_world
from tests.fixtures.gpgkeys import CourtKey, kill_agent
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.seaweed import SeaweedServer
from tests.fixtures.smtpsink import SmtpSink

PDF = plain_pdf(filler=4000)


@pytest.fixture(autouse=True)
def _stop_gateway_gpg_agent(gateway_config: Path) -> Iterator[None]:
    """The gateway's own keyring starts a gpg-agent (court key imports); stop it afterwards."""
    yield
    kill_agent(gateway_config.parent / "var" / "gnupg")


def s3_world(
    server: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
) -> tuple[World, str]:
    """A started gateway on ``server`` under a fresh prefix; the CLI in this test sees it too."""
    prefix = f"gw-{uuid.uuid4().hex[:12]}"
    overrides = server.env(prefix)
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    world = make_world(smtp_sink, gateway_factory, court_key, overrides)
    assert isinstance(world.gw.services.blobs, S3BlobStore)
    return world, prefix


def submit(world: World, code: str, name: str = "compte.pdf") -> tuple[int, str]:
    raw = world.gw.message(
        subject=f"Compte de gestion [{code}]", attachments=[(name, "application/pdf", PDF)]
    )
    return world.gw.send(raw)


def rows(world: World) -> tuple[int, int]:
    with world.gw.services.db.transaction() as session:
        return (
            session.scalar(select(func.count(Submission.id))) or 0,
            session.scalar(select(func.count()).select_from(Blob)) or 0,
        )


def gateway_cli(world: World, *args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(world.gw.services.settings.config_path), *args])
    code = exit_info.value.code
    return code if isinstance(code, int) else 1


def test_s3_gateway_stores_checks_and_exports_from_the_bucket(
    seaweed: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world, prefix = s3_world(seaweed, monkeypatch, smtp_sink, gateway_factory, court_key)
    status, reply = submit(world, world.request_code("compte"))
    assert status == 250, reply
    # Every blob is an object under the prefix, with its recorded SHA-256 as metadata;
    # nothing went to the local blob directory.
    admin = seaweed.client()
    with world.gw.services.db.transaction() as session:
        recorded = {row.key: row.sha256 for row in session.scalars(select(Blob))}
    assert len(recorded) == 3  # raw message, one document, manifest
    for key, sha256 in recorded.items():
        head = admin.head_object(Bucket=seaweed.bucket, Key=f"{prefix}/{key}")
        assert head["Metadata"] == {"sha256": sha256}
        body = admin.get_object(Bucket=seaweed.bucket, Key=f"{prefix}/{key}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha256
        assert PDF[:200] not in body  # stored encrypted
    assert [p for p in world.gw.services.settings.blob_dir.rglob("*") if p.is_file()] == []
    # `gateway check` and `submissions export` read from the bucket.
    assert gateway_cli(world, "check") == 0, capsys.readouterr().err
    reference = f"{COURT}-{world.gw.clock().year}-000001"
    out = tmp_path / "export"
    home = str(world.court_key.gnupghome)
    assert (
        gateway_cli(
            world, "submissions", "export", reference, "--out", str(out), "--gnupghome", home
        )
        == 0
    )
    assert (out / "1" / "documents" / "01-compte.pdf").read_bytes() == PDF
    manifest = json.loads((out / "1" / "manifest.json").read_text())
    assert manifest["documents"][0]["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_s3_check_finds_an_orphan_object_and_a_tampered_one(
    seaweed: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
) -> None:
    world, prefix = s3_world(seaweed, monkeypatch, smtp_sink, gateway_factory, court_key)
    assert submit(world, world.request_code())[0] == 250
    services = world.gw.services
    # A PUT acknowledged but never committed (a crash in between) leaves an orphan object;
    # it is named once older than the grace period.
    orphan = services.blobs.new_key("raw", world.gw.clock())
    services.blobs.write(orphan, b"sealed bytes")
    assert run_check(services.db, services.blobs, world.gw.clock()).ok
    later = world.gw.clock() + timedelta(hours=2)
    findings = run_check(services.db, services.blobs, later)
    assert findings.problems == [f"orphan blob {orphan}: no database row (interrupted write?)"]
    # An object altered in the bucket: the check re-reads it and names it.
    services.blobs.delete(orphan)
    with services.db.transaction() as session:
        doc_blob = session.scalars(select(Document.blob)).one()
    admin = seaweed.client()
    name = f"{prefix}/{doc_blob}"
    body = admin.get_object(Bucket=seaweed.bucket, Key=name)["Body"].read()
    admin.put_object(Bucket=seaweed.bucket, Key=name, Body=body + b"\0")
    findings = run_check(services.db, services.blobs, later)
    assert findings.problems == [f"blob {doc_blob} does not match its recorded SHA-256"]


def test_s3_down_submission_gets_451_and_leaves_no_row(
    seaweed_private: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
) -> None:
    world, _ = s3_world(seaweed_private, monkeypatch, smtp_sink, gateway_factory, court_key)
    code = world.request_code()
    seaweed_private.kill()
    status, reply = submit(world, code)
    assert (status, reply[:5]) == (451, "4.3.0")
    assert re.search(r" \(ref [0-9a-f]{12}\)$", reply), reply  # the operator's log line's id
    assert "amazonaws" not in reply and "127.0.0.1" not in reply and "Error" not in reply
    assert rows(world) == (0, 0)
    # S3 back, the client's retry is accepted.
    seaweed_private.start()
    status, reply = submit(world, code)
    assert status == 250, reply
    assert rows(world) == (1, 3)
