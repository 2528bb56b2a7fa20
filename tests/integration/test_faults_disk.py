"""A blob file system that runs low, or fills up in the middle of a write (a real small tmpfs).

The test mounts a size-limited tmpfs over the gateway's blob directory (it
runs as root) and fills it with a ballast file; removing the ballast is the
operator freeing space.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.audit.check import run_check
from gateway.storage.blobsweep import sweep_blobs
from gateway.storage.models import Blob, Submission
from tests.fixtures.gatewayserver import GatewayFactory, World, make_world
from tests.fixtures.gpgkeys import CourtKey, kill_agent
from tests.fixtures.pdfs import plain_pdf
from tests.fixtures.smtpsink import SmtpSink

PAGE = 4096
RESERVE = 512 * 1024


class SmallDisk:
    """A tmpfs of `size` bytes mounted at `path`, and a ballast file that takes up room in it."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.ballast = path / "ballast"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            check=True,
            capture_output=True,
        )

    def free(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def leave_free(self, room: int) -> None:
        """Grow the ballast until exactly `room` bytes (whole pages) are left."""
        with self.ballast.open("ab") as ballast:
            ballast.write(b"\0" * (self.free() - room))
        assert self.free() == room

    def make_room(self) -> None:
        self.ballast.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], check=True, capture_output=True)


@pytest.fixture(autouse=True)
def _stop_gateway_gpg_agent(gateway_config: Path) -> Iterator[None]:
    yield
    kill_agent(gateway_config.parent / "var" / "gnupg")


def disk_world(
    smtp_sink: SmtpSink,
    gateway_factory: GatewayFactory,
    court_key: CourtKey,
    size: int,
    reserve: int,
) -> Iterator[tuple[World, SmallDisk]]:
    world = make_world(
        smtp_sink,
        gateway_factory,
        court_key,
        {"GATEWAY__LIMITS__DISK_RESERVE_BYTES": str(reserve)},
    )
    disk = SmallDisk(world.gw.services.settings.blob_dir, size)
    try:
        yield world, disk
    finally:
        world.gw.stop()  # nothing may hold a file of the mount
        disk.unmount()


@pytest.fixture
def low_disk(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> Iterator[tuple[World, SmallDisk]]:
    yield from disk_world(smtp_sink, gateway_factory, court_key, 1024 * 1024, RESERVE)


@pytest.fixture
def tiny_disk(
    smtp_sink: SmtpSink, gateway_factory: GatewayFactory, court_key: CourtKey
) -> Iterator[tuple[World, SmallDisk]]:
    yield from disk_world(smtp_sink, gateway_factory, court_key, 16 * PAGE, 0)


def rows(world: World) -> tuple[int, int]:
    with world.gw.services.db.reading() as session:
        return (
            session.scalar(select(func.count()).select_from(Submission)) or 0,
            session.scalar(select(func.count()).select_from(Blob)) or 0,
        )


def filing(world: World, code: str) -> bytes:
    return world.gw.message(
        subject=f"Compte de gestion [{code}]",
        attachments=[("compte.pdf", "application/pdf", plain_pdf())],
    )


def test_free_space_below_the_reserve_gets_452_then_acceptance_resumes(
    low_disk: tuple[World, SmallDisk],
) -> None:
    world, disk = low_disk
    code = world.request_code()
    raw = filing(world, code)
    disk.leave_free(RESERVE - 64 * 1024)
    status, reply = world.gw.send(raw)
    assert (status, reply[:5]) == (452, "4.3.1"), reply
    assert rows(world) == (0, 0)
    disk.make_room()  # the operator frees space: the client's retry is accepted
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    assert rows(world) == (1, 3)


def test_blob_disk_full_mid_write_gets_451_leaves_no_row_and_no_orphan(
    tiny_disk: tuple[World, SmallDisk],
) -> None:
    """The pre-check passes (twice the message fits) but the third blob finds no page left."""
    world, disk = tiny_disk
    code = world.request_code()
    raw = filing(world, code)
    assert len(raw) < PAGE  # three blobs of a page each: raw, document, manifest
    disk.leave_free(2 * PAGE)
    assert disk.free() >= 2 * len(raw)  # so the reserve check lets the write begin
    status, reply = world.gw.send(raw)
    assert (status, reply[:5]) == (451, "4.3.0"), reply
    assert rows(world) == (0, 0)
    services = world.gw.services
    assert list(services.blobs.iter_keys()) == []  # the blobs written so far were removed
    assert [p.name for p in disk.path.rglob("*") if p.is_file()] == ["ballast"]  # no temp file
    later = world.gw.clock() + timedelta(hours=2)
    assert sweep_blobs(services.db, services.blobs, later).orphans == []
    findings = run_check(services.db, services.blobs, later)
    assert findings.ok, findings.problems
    disk.make_room()
    status, reply = world.gw.send(raw)
    assert status == 250, reply
    assert rows(world) == (1, 3)
