"""The folder `greffe sync` writes: one complete folder per request, never a half-written one.

A request is built in a hidden sibling, `.REF.partial-XXXX`, each file
fsynced, then renamed into place in one step. A request that is written
again (a new submission) moves the old folder aside to `.REF.old-XXXX`
first, renames the new one in, then deletes the old. A run killed at any
point leaves only these hidden folders, which the next run settles before
anything else: partial folders are deleted, and an old folder whose new one
never arrived is renamed back. One run at a time holds `.sync.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError, InputError

STATE_FILE = ".sync-state.json"
LOCK_FILE = ".sync.lock"
STATE_VERSION = 1
_HIDDEN = re.compile(r"^\.(?P<ref>[A-Z0-9][A-Z0-9-]{1,60})\.(?P<kind>partial|old)-[A-Za-z0-9_]+$")
REFERENCE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,60}$")


class SyncFolderBusy(GatewayError):
    """Another `greffe sync` is writing to this folder."""


class SyncFolder:
    """The --out folder: its lock, its state file and its request folders."""

    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise InputError(f"{root} is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (released by the kernel if the process dies)."""
        handle = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SyncFolderBusy(f"another greffe sync is writing to {self.root}") from None
            yield
        finally:
            os.close(handle)

    def settle(self) -> list[str]:
        """Undo what a killed run left: delete partial folders, restore orphaned old ones."""
        settled = []
        for entry in sorted(self.root.iterdir()):
            found = _HIDDEN.match(entry.name)
            if found is None or entry.is_symlink():
                continue
            final = self.root / found["ref"]
            if found["kind"] == "old" and not final.exists():
                os.replace(entry, final)
            elif entry.is_dir():
                shutil.rmtree(entry)
            else:  # a manifest.json being replaced
                entry.unlink()
            settled.append(entry.name)
        for stale in self.root.glob(f".{STATE_FILE}.*"):
            stale.unlink(missing_ok=True)
        if settled:
            _fsync_dir(self.root)
        return settled

    # -- state ---------------------------------------------------------------
    def load_state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.root / STATE_FILE).read_text("utf-8"))
        except FileNotFoundError:
            return {"version": STATE_VERSION, "since": {}}
        except (OSError, ValueError):
            raise InputError(
                f"{self.root / STATE_FILE} is unreadable; delete it to start over"
            ) from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise InputError(f"{self.root / STATE_FILE} is not a sync state this version reads")
        state.setdefault("since", {})
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        data = json.dumps(state, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        _replace_file(self.root / STATE_FILE, data, self.root, f".{STATE_FILE}.")

    # -- request folders -----------------------------------------------------
    def synced_count(self, reference: str) -> int | None:
        """How many submissions the request's folder holds (None: no complete folder)."""
        try:
            manifest = json.loads((self._final(reference) / "manifest.json").read_bytes())
            return len(manifest["submissions"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def local_manifest(self, reference: str) -> dict[str, Any] | None:
        try:
            found = json.loads((self._final(reference) / "manifest.json").read_bytes())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    @contextlib.contextmanager
    def building(self, reference: str) -> Iterator[Partial]:
        """A partial folder to fill; moved into place when the block ends without an error."""
        final = self._final(reference)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=self.root))
        try:
            partial = Partial(staging)
            yield partial
            partial.finish()
            self._swap_in(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def replace_manifest(self, reference: str, data: bytes) -> None:
        """Rewrite a complete folder's manifest.json in one rename (its status changed)."""
        final = self._final(reference)
        _replace_file(final / "manifest.json", data, self.root, f".{final.name}.partial-")

    def _final(self, reference: str) -> Path:
        if not REFERENCE.fullmatch(reference):
            raise InputError(f"{reference[:60]!r} is not a request reference")
        return self.root / reference

    def _swap_in(self, staging: Path, final: Path) -> None:
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=self.root))
            os.replace(final, old)  # onto the empty folder mkdtemp made
        os.replace(staging, final)
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old)


class Partial:
    """A request folder being built: files written once, fsynced with their folders."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs = {root}

    def write(self, relative: str, data: bytes) -> None:
        parts = relative.split("/")
        if any(part in ("", ".", "..") or "\\" in part or "\0" in part for part in parts):
            raise InputError(f"{relative[:80]!r} would be written outside the request's folder")
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._dirs.update(p for p in target.parents if p.is_relative_to(self.root))
        with open(target, "xb") as handle:  # x: never two files under one name
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self) -> None:
        for directory in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(directory)


def _replace_file(target: Path, data: bytes, scratch: Path, prefix: str) -> None:
    """Write `data` to a temporary file in `scratch` (same file system), then rename it."""
    handle, temporary = tempfile.mkstemp(prefix=prefix, dir=scratch)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
