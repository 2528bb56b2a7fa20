"""The bench's scratch file system: a fresh journalled ext4 image for one run, then nothing."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.scratch import scratch_root


def _mounts() -> str:
    return Path("/proc/mounts").read_text()


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
                    reason="needs root and loop devices")  # fmt: skip
def test_ext4_scratch_is_a_journalled_mount_holding_tmpdir_and_goes_away() -> None:
    before = (tempfile.gettempdir(), os.environ.get("TMPDIR"))
    with scratch_root("gateway-scratch-test-") as scratch:
        root = scratch.root
        assert os.path.ismount(root.parent) and "journal" in scratch.description
        kind = subprocess.run(["stat", "-f", "-c", "%T", str(root)], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        assert kind in ("ext2/ext3", "ext4")
        assert Path(tempfile.gettempdir()).is_relative_to(root)
        assert os.environ["TMPDIR"] == tempfile.gettempdir()
        (root / "data").write_bytes(b"x" * 4096)
        holder = root.parent.parent
        assert str(root.parent) in _mounts()
    assert (tempfile.gettempdir(), os.environ.get("TMPDIR")) == before
    assert not holder.exists() and str(root.parent) not in _mounts()


def test_tmp_scratch_is_a_directory_removed_after() -> None:
    with scratch_root("gateway-scratch-test-", "tmp") as scratch:
        assert scratch.root.is_dir() and not os.path.ismount(scratch.root)
        (scratch.root / "data").write_text("x")
    assert not scratch.root.exists()
