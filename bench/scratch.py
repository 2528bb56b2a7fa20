"""Where a bench run keeps its servers' data: a fresh ext4 file system of its own.

This machine's root file system is ext4 without a journal, on which the
kernel's inode allocator skips every inode freed in the last one to six
minutes (`recently_deleted`, called only when there is no journal), reading
each one's inode table block to find out.  After a test run or a previous
bench run had deleted its thousands of files, creating a file cost up to
about 0.4 ms of kernel CPU: 14 % of the gateway's CPU at 5 KB in one `perf`
profile (`__ext4_new_inode`), and it faded as those deletions aged, which
made runs of the same code differ by a fifth.  A server in production keeps
its data on a journalled file system, where none of this happens.

So by default a run makes a sparse image file, formats it ext4 with a
journal (the inode tables written at once, so that no background zeroing
runs during the load), loop-mounts it, and removes it all at the end.  Every
server of the run (the gateway, Postfix, the peer, PostgreSQL) keeps its data
there: the run's own directory is on it, and so is $TMPDIR (`tempfile`'s
directory, for this process and the servers it starts) while the run lasts.
`--scratch tmp` keeps the old behaviour (a directory under $TMPDIR); a
machine where the mount is refused (not root, no loop device) falls back to
it and says so.  `--keep` leaves the image mounted, and says where.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_BYTES = 16 * 1024**3  # sparse: only what is written takes room
CHOICES = ("ext4", "tmp")


@dataclass(frozen=True)
class Scratch:
    root: Path
    description: str


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=300)


@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM (a `kill`, a `timeout`) raises SystemExit while the run lasts, so that the
    servers are stopped and the image unmounted as after Ctrl-C; by default the process
    died where it stood and left the image mounted under /var/tmp."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def scratch_root(prefix: str, kind: str = "ext4", keep: bool = False) -> Iterator[Scratch]:
    """A fresh directory for one run's data (see the module's docstring), removed after,
    also when the run is stopped by SIGTERM."""
    with _terminate_unwinds(), _scratch_root(prefix, kind, keep) as scratch:
        yield scratch


@contextlib.contextmanager
def _scratch_root(prefix: str, kind: str, keep: bool) -> Iterator[Scratch]:
    if kind == "ext4":
        try:
            mounted = _mount_image(prefix, keep)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            print(f"bench: no ext4 scratch image ({exc} {detail.decode(errors='replace').strip()});"
                  " using a directory under $TMPDIR", file=sys.stderr)  # fmt: skip
        else:
            with mounted as scratch, _tempdir(scratch.root):
                yield scratch
            return
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # Postfix and PostgreSQL run as their own users below it
    try:
        yield Scratch(root, f"a directory under {root.parent} ({_fs_type(root)})")
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _tempdir(root: Path) -> Iterator[None]:
    """`tempfile`'s directory and $TMPDIR under `root` while the run lasts."""
    before_dir, before_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tmp = root / "tmp"
    tmp.mkdir(mode=0o1777, exist_ok=True)
    tmp.chmod(0o1777)
    tempfile.tempdir, os.environ["TMPDIR"] = str(tmp), str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = before_dir
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env


def _mount_image(prefix: str, keep: bool) -> contextlib.AbstractContextManager[Scratch]:
    if os.geteuid() != 0:
        raise OSError("mounting needs root")
    holder = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    image, mountpoint = holder / "scratch.img", holder / "mnt"
    try:
        mountpoint.mkdir()
        with image.open("wb") as f:
            f.truncate(IMAGE_BYTES)
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
             str(image))  # fmt: skip
        _run("mount", "-o", "loop", str(image), str(mountpoint))
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        raise

    @contextlib.contextmanager
    def mounted() -> Iterator[Scratch]:
        root = mountpoint / "run"
        try:
            root.mkdir()
            root.chmod(0o755)
            mountpoint.chmod(0o755)
            holder.chmod(0o755)
            yield Scratch(root, f"a fresh {IMAGE_BYTES // 1024**3} GB ext4 image with a "
                                "journal, loop-mounted (bench/scratch.py)")  # fmt: skip
        finally:
            if keep:
                print(f"bench: kept {image}, mounted on {mountpoint}", file=sys.stderr)
            else:
                _unmount(mountpoint)
                shutil.rmtree(holder, ignore_errors=True)

    return mounted()


def _unmount(mountpoint: Path) -> None:
    for _ in range(10):  # a server's last process may still be leaving
        done = subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
        if done.returncode == 0:
            return
        time.sleep(1)
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                             check=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "file system unknown"
    return f"{out} file system"
