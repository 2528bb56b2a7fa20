"""Captured mail (relay.mode = "capture"): outgoing mail kept in a local maildir, not relayed.

Each message is a file of the maildir's `new/` folder, written the maildir
way (a file in `tmp/`, fsync'd, then renamed into `new/`, the folder fsync'd),
so a reader never sees half a message and a crash leaves none half-written.
The file's name carries the outbox id (`<seconds>.M<µs>P<pid>_outbox-<id>.<host>`),
and two headers are put on top, outside every signature: `Return-Path` (the
envelope sender, as a local delivery adds it) and `X-Gateway-Outbox-Id`.  Any
mail reader opens the folder (`mutt -f var/mail`); `gateway outbox show ID`
prints a message by its outbox id.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import re
import socket
import time
from pathlib import Path

from gateway.outbox.worker import Attempt, Claimed, Composed, Result

log = logging.getLogger("gateway.outbox")

_ID_IN_NAME = re.compile(r"_outbox-(\d+)\.")
OUTBOX_ID_HEADER = "X-Gateway-Outbox-Id"
WRITE_FAILED = Attempt(Result.TEMPORARY, "could not write to the capture maildir (see the log)")


def _host() -> str:
    # The maildir convention: '/' and ':' may not appear in a name's host part.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def captured_bytes(item: Claimed, composed: Composed) -> bytes:
    """The message as the maildir keeps it: two headers on top of the signed bytes."""
    head = f"Return-Path: <{composed.sender}>\r\n{OUTBOX_ID_HEADER}: {item.id}\r\n"
    return head.encode("ascii", "replace") + composed.data


def write_message(root: Path, outbox_id: int, data: bytes) -> Path:
    """Write one message into `root`'s `new/` atomically and durably; return its path."""
    mailbox.Maildir(root, create=True)  # tmp/, new/ and cur/, as the stdlib makes them
    now = time.time()
    name = (
        f"{int(now)}.M{int(now % 1 * 1_000_000):06d}P{os.getpid()}"
        f"_outbox-{outbox_id}.{_host()}"
    )
    temporary, final = root / "tmp" / name, root / "new" / name
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)
    return final


def captured_files(root: Path, outbox_id: int | None = None) -> list[Path]:
    """The captured messages (of one outbox id, if given), oldest first; none if no maildir."""
    found: list[tuple[float, str, Path]] = []
    for folder in ("new", "cur"):
        try:
            names = os.listdir(root / folder)
        except (FileNotFoundError, NotADirectoryError):  # nothing captured there yet
            continue
        for name in names:
            match = _ID_IN_NAME.search(name)
            if match is None or (outbox_id is not None and int(match.group(1)) != outbox_id):
                continue
            path = root / folder / name
            try:
                found.append((path.stat().st_mtime, name, path))
            except FileNotFoundError:  # moved to cur/ by a mail reader meanwhile
                continue
    return [path for _, _, path in sorted(found)]


class MaildirConnection:
    """A lane's 'session' with the maildir: nothing to open, each message one file."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def open(self) -> Attempt | None:
        return None

    async def send(self, item: Claimed, composed: Composed) -> Attempt:
        data = captured_bytes(item, composed)
        try:
            path = await asyncio.to_thread(write_message, self._root, item.id, data)
        except OSError:
            log.exception("outbox %s (%s): capturing failed", item.id, item.kind)
            return WRITE_FAILED
        return Attempt(Result.SENT, f"captured in {path.parent.parent.name}/new/{path.name}")

    def drop(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MaildirTransport:
    """Delivery into a local maildir: outgoing mail stays on this host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def connection(self) -> MaildirConnection:
        return MaildirConnection(self.root)
