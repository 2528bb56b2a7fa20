"""`gateway backup` under load, `gateway restore`, and what restore refuses (embedded SQLite)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from gateway.backup import Backup
from gateway.retention import Retention
from gateway.storage import migrate
from gateway.storage.crypto import GpgKeyring
from gateway.storage.db import Database
from gateway.storage.models import Request, Submission
from tests.conftest import CliRunner
from tests.fixtures.gatewayserver import World
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.postgres import PostgresCluster

PDF = plain_pdf(filler=3000)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Backups are for the embedded SQLite database (PostgreSQL: pg_dump, see below)."""
    return f"sqlite:///{tmp_path / 'db' / 'gateway.db'}"


def _submit(world: World, code: str, n: int) -> str | None:
    raw = world.gw.message(
        subject=f"Envoi {n} [{code}]", attachments=[(f"piece-{n}.pdf", "application/pdf", PDF)]
    )
    status, reply = world.gw.send(raw)
    return reply.split()[-1] if status == 250 else None


class Load:
    """Submissions sent one after another from a thread, until stopped."""

    def __init__(self, world: World, code: str) -> None:
        self.world, self.code = world, code
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            reference = _submit(self.world, self.code, n)
            if reference:
                self.accepted.append(reference)
            n += 1

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"only {len(self.accepted)} accepted"
            time.sleep(0.05)


def _use_restored(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("GATEWAY__GATEWAY__DATA_DIR", str(data_dir))
    monkeypatch.setenv("GATEWAY__DATABASE__URL", f"sqlite:///{data_dir / 'gateway.db'}")


def test_backup_under_load_then_restore_checks_and_decrypts(
    world: World, cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = world.request_code()
    load = Load(world, code)
    load.thread.start()
    try:
        load.wait_for(3)
        before = len(load.accepted)
        result = cli("backup", "--out", str(tmp_path / "backup"))
        during = len(load.accepted)
        load.wait_for(during + 2)  # serve kept accepting
    finally:
        load.stop.set()
        load.thread.join(timeout=60)
    assert result.code == 0, result.err
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["format"] == "gateway.backup/1"

    restored = tmp_path / "restored"
    result = cli("restore", str(tmp_path / "backup"), "--to", str(restored))
    assert result.code == 0, result.err
    settings = world.gw.services.settings
    for name in ("server-secret", "signing-key.asc", "dkim-private.pem"):
        assert (restored / "keys" / name).read_bytes() == (settings.keys_dir / name).read_bytes()
    _use_restored(monkeypatch, restored)
    check = cli("check")
    assert check.code == 0, check.err

    database = Database.from_url(f"sqlite:///{restored / 'gateway.db'}")
    try:
        with database.reading() as session:
            stored = [(s.reference, s.raw_blob, s.raw_sha256) for s in session.scalars(
                select(Submission))]  # fmt: skip
    finally:
        database.dispose()
    assert before <= len(stored) <= len(load.accepted)  # the snapshot lies between the two
    assert {ref for ref, _, _ in stored} <= set(load.accepted)
    with GpgKeyring(world.court_key.gnupghome) as keyring:
        for reference, key, sha256 in stored:
            raw = keyring.decrypt((restored / "blobs" / key).read_bytes())
            assert hashlib.sha256(raw).hexdigest() == sha256, reference


@pytest.fixture
def backup_dir(world: World, cli: CliRunner, tmp_path: Path) -> Path:
    code = world.request_code()
    assert _submit(world, code, 1)
    result = cli("backup", "--out", str(tmp_path / "backup"))
    assert result.code == 0, result.err
    return tmp_path / "backup"


def _a_blob(backup: Path) -> Path:
    return next(p for p in sorted((backup / "blobs").rglob("*.pgp")))


@pytest.mark.parametrize("damage", ["no manifest", "unfinished", "blob changed", "blob missing",
                                    "foreign path"])  # fmt: skip
def test_restore_refuses_a_backup_that_does_not_match_its_manifest(
    backup_dir: Path, cli: CliRunner, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(backup_dir, broken)
    manifest_path = broken / "manifest.json"
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if damage == "no manifest":
        manifest_path.unlink()
    elif damage == "unfinished":
        manifest["complete"] = False
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "blob changed":
        blob = _a_blob(broken)
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0x01
        blob.write_bytes(bytes(data))
    elif damage == "blob missing":
        _a_blob(broken).unlink()
    else:
        manifest["files"].append({"path": "../outside", "size": 1, "sha256": "0" * 64})
        manifest_path.write_text(json.dumps(manifest))
    target = tmp_path / "target"
    result = cli("restore", str(broken), "--to", str(target))
    assert result.code == 1, result.out
    assert result.err.startswith("gateway: ")
    assert not target.exists()  # nothing written


def test_restore_refuses_a_non_empty_target_and_backup_a_non_empty_out(
    backup_dir: Path, cli: CliRunner, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "something").write_text("x")
    result = cli("restore", str(backup_dir), "--to", str(target))
    assert result.code == 1 and "must be an empty or new folder" in result.err
    assert sorted(p.name for p in target.iterdir()) == ["something"]
    assert cli("backup", "--out", str(target)).code == 1


def test_backup_takes_a_new_snapshot_when_a_purge_removes_blobs_meanwhile(
    world: World, cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = world.gw.services
    old = _submit(world, world.request_code(), 1)
    world.sink.wait_for(2, timeout=30)  # its receipt, before the next code's mail
    kept = _submit(world, world.request_code(), 2)
    assert old and kept
    with services.db.transaction() as session:
        session.execute(
            update(Request)
            .where(Request.reference == old.split("/")[0])
            .values(status="accepted", updated_at=datetime.now(UTC) - timedelta(days=90))
        )
    retention = Retention(services.db, services.blobs, services.clock, 30)

    class PurgeDuringCopy:
        """The real blob store; the purge runs between the snapshot and the first blob read."""

        def __init__(self) -> None:
            self.purged = False

        def read(self, key: str) -> bytes:
            if not self.purged:
                self.purged = True
                assert len(retention.purge("test").purged) == 1
            return services.blobs.read(key)

    blobs: Any = PurgeDuringCopy()
    backup = Backup(services.db, blobs, services.settings.keys_dir, services.clock)
    summary = backup.write(tmp_path / "backup")
    assert blobs.purged and summary.blobs == 3  # the kept submission only: raw, document, manifest

    restored = tmp_path / "restored"
    assert cli("restore", str(tmp_path / "backup"), "--to", str(restored)).code == 0
    _use_restored(monkeypatch, restored)
    check = cli("check")
    assert check.code == 0, check.err


@pytest.mark.postgres
def test_backup_on_postgresql_points_to_pg_dump(
    cli: CliRunner,
    tmp_path: Path,
    postgres_cluster: PostgresCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres_cluster.create_database()
    database = Database.from_url(url)
    migrate.upgrade(database)  # an initialised PostgreSQL gateway
    database.dispose()
    monkeypatch.setenv("GATEWAY__DATABASE__URL", url)
    result = cli("backup", "--out", str(tmp_path / "backup"))
    assert result.code == 1
    assert "pg_dump" in result.err and "README" in result.err
    assert not (tmp_path / "backup").exists()
