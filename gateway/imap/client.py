"""A small typed IMAP client over aioimaplib: select, search, fetch, act; sessions resumed.

aioimaplib speaks the protocol; this module turns its raw response lines
into values and its failures into `ImapUnavailable`.  Connecting and logging
in (address checks, TLS, password or OAuth2 token) is `gateway.imap.session`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aioimaplib

from gateway.errors import ImapUnavailable
from gateway.imap.session import (
    TIMEOUT,
    Credentials,
    Resolver,
    SessionEnded,
    checked_address,
    open_session,
    quote,
    refuses_address,
    shut,
    system_resolver,
)
from gateway.settings import ImapMailbox

__all__ = [  # the session's names are used from here too
    "Credentials",
    "ImapClient",
    "ImapUnavailable",
    "Resolver",
    "checked_address",
    "quote",
    "refuses_address",
    "system_resolver",
]
log = logging.getLogger("gateway.imap")
_IDLE_MAX = 1740.0  # RFC 2177: re-issue IDLE at least every 29 minutes

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_GM_MSGID = re.compile(rb"\bX-GM-MSGID (\d+)")
GMAIL = "X-GM-EXT-1"
"""The capability of Gmail's IMAP extensions (X-GM-MSGID and the like)."""
_STATUS_CODE = re.compile(rb"\[(UIDVALIDITY|UIDNEXT) (\d+)\]")
_IMAP_DATE = re.compile(r"(\d{1,2})-(\w{3})-(\d{4}) (\d\d:\d\d:\d\d) ([+-]\d{4})")


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime | None
    raw: bytes
    gm_msgid: int | None = None
    """Gmail's message id, the same in every folder (label) it is in; None elsewhere."""


Make = Callable[[Any], Awaitable[Any]]
Replay = bool | Callable[[], Awaitable[bool]]
"""After a session was resumed: whether to send the command again.  A callable decides,
for a command whose effect may already have happened (True: send it again)."""
MAX_RESUMES = 3


class ImapClient:
    """One logged-in IMAP session for one configured mailbox.

    With a `reopen` function (OAuth2 mailboxes), a session the server ends
    mid-pass is resumed: a new connection logs in (the token source
    refreshes a token the server refused), the folder is selected again and
    must have kept its UIDVALIDITY, and the command is sent again where
    that cannot do it twice (see `Replay`).
    """

    def __init__(
        self, imap: Any, name: str, reopen: Callable[[], Awaitable[Any]] | None = None
    ) -> None:
        self._imap = imap
        self.name = name
        self._reopen = reopen
        self._selected: tuple[str, int] | None = None
        self._resumed = 0
        self._special: dict[str, str] | None = None

    @classmethod
    async def connect(
        cls,
        mailbox: ImapMailbox,
        credentials: Credentials,
        *,
        resolve: Resolver = system_resolver,
        tls_context: ssl.SSLContext | None = None,
    ) -> ImapClient:
        async def reopen() -> Any:
            return await open_session(mailbox, credentials, resolve, tls_context)

        imap = await reopen()
        return cls(imap, mailbox.name, None if isinstance(credentials, str) else reopen)

    @property
    def resumed(self) -> int:
        """How many times this client reconnected after the server ended its session."""
        return self._resumed

    def has(self, capability: str) -> bool:
        return bool(self._imap.has_capability(capability))

    async def _ok(self, what: str, make: Make, *, replay: Replay = True) -> list[Any]:
        """Run `make(session)`: its lines when OK, else ImapUnavailable; resumes once."""
        response = await self._resuming(what, make, replay)
        if response is None:  # resumed, and the command had already taken effect
            return []
        if response.result != "OK":
            raise ImapUnavailable(f"imap {self.name}: {what} refused")
        return list(response.lines)

    async def _resuming(self, what: str, make: Make, replay: Replay) -> Any:
        try:
            return await self._call(what, make)
        except SessionEnded:
            await self._resume(what)
        if replay is False:
            raise ImapUnavailable(f"imap {self.name}: connection lost during {what}")
        if replay is not True and not await replay():
            return None
        try:
            return await self._call(what, make)
        except SessionEnded:
            raise ImapUnavailable(f"imap {self.name}: connection lost during {what}") from None

    async def _call(self, what: str, make: Make) -> Any:
        """The command's response; SessionEnded as soon as the connection is lost."""
        imap = self._imap
        if imap.lost.is_set():
            raise SessionEnded
        command = asyncio.ensure_future(make(imap))
        lost = asyncio.ensure_future(imap.lost.wait())
        try:
            await asyncio.wait({command, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not command.done():
            command.cancel()
            await asyncio.wait({command})  # let it finish cancelling; its outcome is moot
            if not command.cancelled():
                command.exception()  # retrieved: asyncio would log it otherwise
            raise SessionEnded
        try:
            response = command.result()
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            if imap.lost.is_set():
                raise SessionEnded from exc
            raise ImapUnavailable(f"imap {self.name}: {what} failed") from exc
        if imap.lost.is_set() and getattr(response, "result", "OK") != "OK":
            raise SessionEnded  # refused because the session had ended, not for itself
        return response

    async def _resume(self, what: str) -> None:
        """A new session in place of the one the server ended, on the same folder."""
        if self._reopen is None or self._resumed >= MAX_RESUMES:
            raise ImapUnavailable(f"imap {self.name}: connection lost during {what}")
        self._resumed += 1
        log.warning("imap session ended by the server, reconnecting", extra={"mailbox": self.name})
        await shut(self._imap)
        self._imap = await self._reopen()
        self._special = None
        if self._selected is not None:
            folder, uidvalidity = self._selected
            if (await self.select(folder)).uidvalidity != uidvalidity:
                raise ImapUnavailable(f"imap {self.name}: UIDVALIDITY of {folder} changed")

    async def select(self, folder: str) -> FolderState:
        lines = await self._ok(f"SELECT {folder}", lambda imap: imap.select(quote(folder)))
        codes = {m.group(1): int(m.group(2)) for line in lines for m in _STATUS_CODE.finditer(line)}
        if b"UIDVALIDITY" not in codes:
            raise ImapUnavailable(f"imap {self.name}: no UIDVALIDITY for {folder}")
        self._selected = (folder, codes[b"UIDVALIDITY"])
        return FolderState(codes[b"UIDVALIDITY"], codes.get(b"UIDNEXT"))

    async def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above last_uid in the selected folder, ascending."""
        found = await self.search("UID", f"{last_uid + 1}:*")
        # "n:*" matches the highest UID even when it is below n (RFC 3501 6.4.8).
        return [uid for uid in found if uid > last_uid]

    async def search_header(self, name: str, value: str) -> list[int]:
        return await self.search("HEADER", quote(name), quote(value))

    async def search(self, *criteria: str) -> list[int]:
        """UIDs in the selected folder matching the criteria (already IMAP-quoted), ascending."""
        lines = await self._ok(
            f"UID SEARCH {criteria[0]}",
            lambda imap: imap.uid_search(*criteria, charset=None),
        )
        return sorted({int(t) for line in lines[:-1] for t in line.split() if t.isdigit()})

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Each present message's size in octets (one command); a vanished UID is absent.

        Lets the puller fetch bodies in groups of bounded bytes without
        guessing: a folder of 25 MB messages must not be fetched a hundred at a time.
        """
        if not uids:
            return {}
        wanted = uid_set(uids)
        lines = await self._ok(
            "UID FETCH RFC822.SIZE", lambda imap: imap.uid("fetch", wanted, "(UID RFC822.SIZE)")
        )
        return parse_sizes(lines)

    async def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The messages' bytes (BODY.PEEK[]: \\Seen is not set), flags and dates, in one command.

        On Gmail also each message's X-GM-MSGID, which finds it in "All Mail".
        A vanished UID is simply absent from the answer.
        """
        if not uids:
            return []
        wanted = uid_set(uids)
        items = "UID FLAGS INTERNALDATE " + ("X-GM-MSGID " if self.has(GMAIL) else "")
        lines = await self._ok(
            f"UID FETCH {len(uids)} messages",
            lambda imap: imap.uid("fetch", wanted, f"({items}BODY.PEEK[])"),
        )
        chosen = set(uids)
        return [message for message in parse_fetch(lines) if message.uid in chosen]

    async def append(
        self,
        folder: str,
        raw: bytes,
        flags: Sequence[str],
        when: datetime | None,
        *,
        probe: tuple[str, str] | None = None,
    ) -> None:
        """APPEND; `probe` (a header name and value only this message has) makes it safe to
        resume: after a lost connection the message is looked for before it is sent again."""
        kept = [f for f in flags if f.lower() not in ("\\recent", "\\deleted")]

        async def missing() -> bool:
            if probe is None or self._selected is None or self._selected[0] != folder:
                raise ImapUnavailable(f"imap {self.name}: connection lost during APPEND")
            return not await self.search_header(*probe)

        await self._ok(
            f"APPEND {folder}",
            lambda imap: imap.append(
                raw, mailbox=quote(folder), flags=f"({' '.join(kept)})", date=when
            ),
            replay=missing,
        )

    async def delete(self, uids: Sequence[int]) -> None:
        """Flag \\Deleted and expunge: only these UIDs where the server has UIDPLUS."""
        if not uids:
            return
        wanted = uid_set(uids)
        await self._ok(
            "UID STORE", lambda imap: imap.uid("store", wanted, "+FLAGS.SILENT", "(\\Deleted)")
        )
        if self.has("UIDPLUS"):
            await self._ok("UID EXPUNGE", lambda imap: imap.uid("expunge", wanted))
        else:  # also expunges what a user flagged \Deleted: the best plain IMAP offers
            await self._ok("EXPUNGE", lambda imap: imap.expunge())

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """Move the messages in one command (UID MOVE of the set; else COPY then delete)."""
        if not uids:
            return
        wanted = uid_set(uids)
        if self.has("MOVE"):  # moved UIDs leave the folder: sending it again moves nothing twice
            await self._ok(
                f"UID MOVE {folder}", lambda imap: imap.uid("move", wanted, quote(folder))
            )
            return
        await self._ok(
            f"UID COPY {folder}",
            lambda imap: imap.uid("copy", wanted, quote(folder)),
            replay=False,  # a second COPY would leave two copies
        )
        await self.delete(uids)

    async def ensure_folder(self, folder: str) -> None:
        """Create the folder when missing (an existing one answers NO [ALREADYEXISTS])."""
        response = await self._resuming("CREATE", lambda imap: imap.create(quote(folder)), True)
        if response.result != "OK" and not any(b"ALREADYEXISTS" in line for line in response.lines):
            lines = await self._ok("LIST", lambda imap: imap.list('""', quote(folder)))
            if len(lines) < 2:  # only the tagged completion: the folder really is missing
                raise ImapUnavailable(f"imap {self.name}: cannot create {folder}")

    async def special_folders(self) -> dict[str, str]:
        """Special-use attribute (RFC 6154: `\\All`, `\\Trash` ...) -> folder name, per session."""
        if self._special is None:
            if self.has("SPECIAL-USE") and self.has("LIST-EXTENDED"):
                lines = await self._ok(
                    "LIST (SPECIAL-USE)", lambda imap: imap.list('(SPECIAL-USE) ""', '"*"')
                )
            else:  # Gmail puts the attributes in every LIST answer
                lines = await self._ok("LIST", lambda imap: imap.list('""', '"*"'))
            self._special = special_uses(lines)
        return self._special

    async def wait_for_news(self, timeout: float, stop: asyncio.Event) -> bool:
        """IDLE on the selected folder until news, the timeout or stop; False without IDLE."""
        if not self.has("IDLE"):
            return False
        imap = self._imap
        try:
            idle = await imap.idle_start(timeout=min(timeout, _IDLE_MAX))
            try:
                await _first_exists(imap, stop)
            finally:
                if imap.lost.is_set():
                    idle.cancel()  # its tagged answer will never come
                else:
                    imap.idle_done()
                    await asyncio.wait_for(idle, TIMEOUT)
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            raise ImapUnavailable(f"imap {self.name}: IDLE failed") from exc
        if imap.lost.is_set():
            raise ImapUnavailable(f"imap {self.name}: connection lost during IDLE")
        return True

    async def close(self) -> None:
        """Log out politely when possible; never raises."""
        await shut(self._imap)


async def _first_exists(imap: Any, stop: asyncio.Event) -> None:
    """Read IDLE pushes until one announces a message (or the IDLE timer's stop marker)."""
    stopped = asyncio.ensure_future(stop.wait())
    lost = asyncio.ensure_future(imap.lost.wait())
    try:
        while not stop.is_set():
            push = asyncio.ensure_future(imap.wait_server_push(timeout=_IDLE_MAX))
            done, _ = await asyncio.wait({push, stopped, lost}, return_when=asyncio.FIRST_COMPLETED)
            if push not in done:
                push.cancel()
                return
            lines = push.result()
            if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                return
            if any(line.endswith(b"EXISTS") for line in lines if isinstance(line, bytes)):
                return
    finally:
        stopped.cancel()
        lost.cancel()


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set naming exactly these UIDs: `3:5,9,12:13`.

    A range is written only over consecutive UIDs we hold, so it cannot take in
    a message that arrived between two of ours.
    """
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set")
    parts: list[str] = []
    start = previous = ordered[0]
    for uid in ordered[1:]:
        if uid != previous + 1:
            parts.append(_span(start, previous))
            start = uid
        previous = uid
    parts.append(_span(start, previous))
    return ",".join(parts)


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}:{last}"


def parse_sizes(lines: Sequence[Any]) -> dict[int, int]:
    """UID -> RFC822.SIZE from a FETCH response (lines without both are flag updates)."""
    sizes: dict[int, int] = {}
    for line in lines:
        if not (isinstance(line, bytes) and _FETCH_START.match(line)):
            continue
        uid, size = _UID.search(line), _SIZE.search(line)
        if uid and size:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def parse_fetch(lines: Sequence[Any]) -> list[FetchedMessage]:
    """Turn aioimaplib's FETCH response lines (bytes, and bytearray literals) into messages."""
    messages: list[FetchedMessage] = []
    meta, literal = b"", None
    for line in [*lines, b"0 FETCH ("]:  # a sentinel closes the last message
        if isinstance(line, bytes) and _FETCH_START.match(line):
            if meta and literal is not None and (uid := _UID.search(meta)):
                messages.append(_message(int(uid.group(1)), meta, literal))
            meta, literal = line, None
        elif isinstance(line, bytearray):
            literal = bytes(line)
        elif isinstance(line, bytes):
            meta += b" " + line
    return messages


def _message(uid: int, meta: bytes, raw: bytes) -> FetchedMessage:
    flags = _FLAGS.search(meta)
    date = _INTERNALDATE.search(meta)
    msgid = _GM_MSGID.search(meta)
    return FetchedMessage(
        uid=uid,
        flags=tuple(flags.group(1).decode("ascii", "replace").split()) if flags else (),
        internal_date=parse_internal_date(date.group(1).decode("ascii")) if date else None,
        raw=raw,
        gm_msgid=int(msgid.group(1)) if msgid else None,
    )


def parse_internal_date(text: str) -> datetime | None:
    """`25-Nov-2026 02:57:28 +0000` as an aware datetime."""
    match = _IMAP_DATE.fullmatch(text.strip())
    if not match:
        return None
    day, month, year, clock, zone = match.groups()
    try:
        return parsedate_to_datetime(f"{day} {month} {year} {clock} {zone}")
    except (TypeError, ValueError):
        return None


_NOT_SPECIAL = ("\\haschildren", "\\hasnochildren", "\\noselect", "\\noinferiors", "\\marked")
_LIST_LINE = re.compile(rb'^\(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.*)$')


def special_uses(lines: Sequence[Any]) -> dict[str, str]:
    """Special-use attribute -> folder name, from LIST response lines (the first of each wins).

    A name may be quoted, an atom, or a literal (aioimaplib hands the literal
    over as the next, bytearray, line).  Names stay in the server's modified
    UTF-7: they are only sent back to it.
    """
    found: dict[str, str] = {}
    pending: list[str] = []
    for line in lines:
        if isinstance(line, bytearray):
            name = bytes(line).decode("ascii", "replace")
        elif isinstance(line, bytes) and (match := _LIST_LINE.match(line)):
            pending = [a for a in match.group(1).decode("ascii", "replace").split() if a]
            tail = match.group(2)
            if re.fullmatch(rb"\{\d+\}", tail):
                continue  # the name is the literal that follows
            name = _unquote(tail.decode("ascii", "replace"))
        else:
            continue
        for attribute in pending:
            if attribute.startswith("\\") and attribute.lower() not in _NOT_SPECIAL:
                found.setdefault("\\" + attribute[1:].capitalize(), name)  # any case: \\All
        pending = []
    return found


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text
