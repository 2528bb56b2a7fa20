"""A small typed IMAP client over aioimaplib: connect (host checks, TLS), select, fetch, act.

aioimaplib speaks the protocol; this module turns its raw response lines
into values and its failures into `ImapUnavailable`.  It also adds what
aioimaplib lacks: STARTTLS, and connecting to the address we checked (not a
second DNS answer) while verifying the certificate against the host name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aioimaplib

from gateway.errors import ConfigError, ImapUnavailable
from gateway.settings import ImapMailbox

log = logging.getLogger("gateway.imap")
Resolver = Callable[[str, int], Awaitable[list[str]]]
TIMEOUT = 60.0
_IDLE_MAX = 1740.0  # RFC 2177: re-issue IDLE at least every 29 minutes

_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
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


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refuses_address(address: str) -> bool:
    """True for an address a mailbox may use only with allow_private (loopback is local)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.is_loopback:
        return False
    return bool(
        ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified
    )


async def checked_address(mailbox: ImapMailbox, resolve: Resolver) -> str:
    """Resolve the host and refuse private addresses unless the mailbox allows them."""
    try:
        addresses = await resolve(mailbox.host, mailbox.port)
    except OSError as exc:
        raise ImapUnavailable(f"imap {mailbox.name}: cannot resolve {mailbox.host}") from exc
    if not addresses:
        raise ImapUnavailable(f"imap {mailbox.name}: {mailbox.host} has no address")
    if not mailbox.allow_private and any(refuses_address(a) for a in addresses):
        raise ConfigError(
            f"invalid configuration: imap.mailboxes[{mailbox.name}].host resolves to a "
            "private address; set allow_private = true to pull from it"
        )
    return addresses[0]


def quote(text: str) -> str:
    """An IMAP quoted string (folder names may hold spaces)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _PinnedImap(aioimaplib.IMAP4):  # type: ignore[misc]
    """IMAP4 that connects to a given address and checks TLS against the host name."""

    def __init__(
        self, address: str, port: int, server_hostname: str, tls: ssl.SSLContext | None
    ) -> None:
        self._server_hostname = server_hostname
        super().__init__(host=address, port=port, timeout=TIMEOUT, ssl_context=tls)

    def create_client(
        self, host: str, port: int, loop: Any, conn_lost_cb: Any = None, ssl_context: Any = None
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = aioimaplib.IMAP4ClientProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(
                lambda: self.protocol,
                host,
                port,
                ssl=ssl_context,
                server_hostname=self._server_hostname if ssl_context else None,
            )
        )


class ImapClient:
    """One logged-in IMAP session for one configured mailbox."""

    def __init__(self, imap: Any, name: str) -> None:
        self._imap = imap
        self.name = name

    @classmethod
    async def connect(
        cls,
        mailbox: ImapMailbox,
        password: str,
        *,
        resolve: Resolver = system_resolver,
        tls_context: ssl.SSLContext | None = None,
    ) -> ImapClient:
        address = await checked_address(mailbox, resolve)
        context = tls_context or ssl.create_default_context()
        implicit = context if mailbox.tls == "ssl" else None
        imap = _PinnedImap(address, mailbox.port, mailbox.host, implicit)
        client = cls(imap, mailbox.name)
        try:
            await imap.wait_hello_from_server()
            if mailbox.tls == "starttls":
                await client._starttls(context, mailbox.host)
            response = await imap.login(quote(mailbox.username), password)
            if response.result != "OK":
                raise ImapUnavailable(f"imap {mailbox.name}: login refused")
            await imap.protocol.capability()  # the list grows after login
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:  # TLS errors too
            await client.close()
            raise ImapUnavailable(
                f"imap {mailbox.name}: cannot connect ({type(exc).__name__})"
            ) from exc
        except BaseException:
            await client.close()
            raise
        return client

    async def _starttls(self, context: ssl.SSLContext, host: str) -> None:
        protocol = self._imap.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapUnavailable(f"imap {self.name}: server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        response = await asyncio.wait_for(protocol.execute(command), TIMEOUT)
        if response.result != "OK":
            raise ImapUnavailable(f"imap {self.name}: STARTTLS refused")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=host
        )
        await protocol.capability()  # capabilities before TLS must be forgotten (RFC 3501 6.2.1)

    def has(self, capability: str) -> bool:
        return bool(self._imap.has_capability(capability))

    async def _ok(self, what: str, awaitable: Awaitable[Any]) -> list[Any]:
        try:
            response = await awaitable
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            raise ImapUnavailable(f"imap {self.name}: {what} failed") from exc
        if response.result != "OK":
            raise ImapUnavailable(f"imap {self.name}: {what} refused")
        return list(response.lines)

    async def select(self, folder: str) -> FolderState:
        lines = await self._ok(f"SELECT {folder}", self._imap.select(quote(folder)))
        codes = {m.group(1): int(m.group(2)) for line in lines for m in _STATUS_CODE.finditer(line)}
        if b"UIDVALIDITY" not in codes:
            raise ImapUnavailable(f"imap {self.name}: no UIDVALIDITY for {folder}")
        return FolderState(codes[b"UIDVALIDITY"], codes.get(b"UIDNEXT"))

    async def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above last_uid in the selected folder, ascending."""
        lines = await self._ok(
            "UID SEARCH", self._imap.uid_search(f"UID {last_uid + 1}:*", charset=None)
        )
        found = {int(t) for line in lines[:-1] for t in line.split() if t.isdigit()}
        # "n:*" matches the highest UID even when it is below n (RFC 3501 6.4.8).
        return sorted(uid for uid in found if uid > last_uid)

    async def search_header(self, name: str, value: str) -> list[int]:
        lines = await self._ok(
            "UID SEARCH HEADER",
            self._imap.uid_search("HEADER", quote(name), quote(value), charset=None),
        )
        return sorted({int(t) for line in lines[:-1] for t in line.split() if t.isdigit()})

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Each present message's size in octets (one command); a vanished UID is absent.

        Lets the puller fetch bodies in groups of bounded bytes without
        guessing: a folder of 25 MB messages must not be fetched a hundred at a time.
        """
        if not uids:
            return {}
        lines = await self._ok(
            "UID FETCH RFC822.SIZE", self._imap.uid("fetch", uid_set(uids), "(UID RFC822.SIZE)")
        )
        return parse_sizes(lines)

    async def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """The messages' bytes (BODY.PEEK[]: \\Seen is not set), flags and dates, in one command.

        A vanished UID is simply absent from the answer.
        """
        if not uids:
            return []
        lines = await self._ok(
            f"UID FETCH {len(uids)} messages",
            self._imap.uid("fetch", uid_set(uids), "(UID FLAGS INTERNALDATE BODY.PEEK[])"),
        )
        wanted = set(uids)
        return [message for message in parse_fetch(lines) if message.uid in wanted]

    async def append(
        self, folder: str, raw: bytes, flags: Sequence[str], when: datetime | None
    ) -> None:
        kept = [f for f in flags if f.lower() not in ("\\recent", "\\deleted")]
        await self._ok(
            f"APPEND {folder}",
            self._imap.append(raw, mailbox=quote(folder), flags=f"({' '.join(kept)})", date=when),
        )

    async def delete(self, uids: Sequence[int]) -> None:
        """Flag \\Deleted and expunge: only these UIDs where the server has UIDPLUS."""
        if not uids:
            return
        wanted = uid_set(uids)
        await self._ok("UID STORE", self._imap.uid("store", wanted, "+FLAGS.SILENT", "(\\Deleted)"))
        if self.has("UIDPLUS"):
            await self._ok("UID EXPUNGE", self._imap.uid("expunge", wanted))
        else:  # also expunges what a user flagged \Deleted: the best plain IMAP offers
            await self._ok("EXPUNGE", self._imap.expunge())

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """Move the messages in one command (UID MOVE of the set; else COPY then delete)."""
        if not uids:
            return
        wanted = uid_set(uids)
        if self.has("MOVE"):
            await self._ok(f"UID MOVE {folder}", self._imap.uid("move", wanted, quote(folder)))
            return
        await self._ok(f"UID COPY {folder}", self._imap.uid("copy", wanted, quote(folder)))
        await self.delete(uids)

    async def ensure_folder(self, folder: str) -> None:
        """Create the folder when missing (an existing one answers NO [ALREADYEXISTS])."""
        try:
            response = await self._imap.create(quote(folder))
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            raise ImapUnavailable(f"imap {self.name}: CREATE failed") from exc
        if response.result != "OK" and not any(b"ALREADYEXISTS" in line for line in response.lines):
            lines = await self._ok("LIST", self._imap.list('""', quote(folder)))
            if len(lines) < 2:  # only the tagged completion: the folder really is missing
                raise ImapUnavailable(f"imap {self.name}: cannot create {folder}")

    async def wait_for_news(self, timeout: float, stop: asyncio.Event) -> bool:
        """IDLE on the selected folder until news, the timeout or stop; False without IDLE."""
        if not self.has("IDLE"):
            return False
        try:
            idle = await self._imap.idle_start(timeout=min(timeout, _IDLE_MAX))
            try:
                await _first_exists(self._imap, stop)
            finally:
                self._imap.idle_done()
                await asyncio.wait_for(idle, TIMEOUT)
        except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:
            raise ImapUnavailable(f"imap {self.name}: IDLE failed") from exc
        return True

    async def close(self) -> None:
        """Log out politely when possible; never raises."""
        try:
            if self._imap.get_state() in ("AUTH", "SELECTED"):  # logged in: say goodbye
                await asyncio.wait_for(self._imap.logout(), 5)
        except Exception:  # the connection is going away either way
            log.debug("imap logout failed", exc_info=True)
        transport = getattr(self._imap.protocol, "transport", None)
        if transport is not None:
            transport.close()


async def _first_exists(imap: Any, stop: asyncio.Event) -> None:
    """Read IDLE pushes until one announces a message (or the IDLE timer's stop marker)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            push = asyncio.ensure_future(imap.wait_server_push(timeout=_IDLE_MAX))
            done, _ = await asyncio.wait({push, stopped}, return_when=asyncio.FIRST_COMPLETED)
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
    return FetchedMessage(
        uid=uid,
        flags=tuple(flags.group(1).decode("ascii", "replace").split()) if flags else (),
        internal_date=parse_internal_date(date.group(1).decode("ascii")) if date else None,
        raw=raw,
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
