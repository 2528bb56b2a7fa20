"""The bench's scratch file system: a fresh journalled ext4 image for one run, then nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/dev/loop-control").exists(),
                    reason="needs root and loop devices")  # fmt: skip
def test_a_terminated_run_still_unmounts_its_image() -> None:
    # What `timeout` or `kill` does to a bench run: its image must not stay mounted.
    script = (
        "import sys, time\n"
        "from bench.scratch import scratch_root\n"
        "with scratch_root('gateway-scratch-term-') as scratch:\n"
        "    print(scratch.root, flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    root = Path(proc.stdout.readline().strip())
    try:
        assert str(root.parent) in _mounts()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert str(root.parent) not in _mounts() and not root.parent.parent.exists()
    finally:
        proc.kill()
        proc.wait()
        if str(root.parent) in _mounts():  # the regression this catches: clean up after it
            subprocess.run(["umount", str(root.parent)], check=False)
            subprocess.run(["rm", "-rf", str(root.parent.parent)], check=False)
