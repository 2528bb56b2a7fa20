"""Opening an IMAP session: address checks, TLS (implicit or STARTTLS), LOGIN or AUTHENTICATE.

aioimaplib speaks the protocol; this module adds what it lacks: STARTTLS,
connecting to the address we checked (not a second DNS answer) while
verifying the certificate against the host name, telling a lost connection
at once, and logging in with an OAuth2 access token (`gateway.imap.sasl`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aioimaplib

from gateway.errors import ConfigError, ImapUnavailable
from gateway.imap.oauth import SASL_ABORT, TokenSource, oauthbearer_response, xoauth2_response
from gateway.imap.sasl import sasl_authenticate
from gateway.settings import ImapMailbox

log = logging.getLogger("gateway.imap")
Resolver = Callable[[str, int], Awaitable[list[str]]]
TIMEOUT = 60.0


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


class EndingProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, telling when the server ends the session.

    `lost` is set when the connection goes away, or when the server says
    `* BYE` outside LOGOUT (Exchange Online sends "BYE Session invalidated -
    AccessTokenExpired" in the middle of a command, and may then answer
    further commands with BAD rather than close: reported in aioimaplib's
    issue 83 and imapsync's issue 250).  aioimaplib ignores both: a command
    in flight would wait for its timeout.
    """

    def __init__(self, loop: Any) -> None:
        self.lost = asyncio.Event()
        super().__init__(loop, lambda _exc: self.lost.set())

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        if line.startswith(b"* BYE") and not self._logging_out():
            self.lost.set()
            if self.transport is not None:
                self.transport.close()  # the session is over whatever comes next
        return super()._handle_line(line, current_cmd)

    def _logging_out(self) -> bool:
        """A BYE is the normal answer to LOGOUT (and a greeting BYE is the hello's failure)."""
        pending = self.pending_sync_command
        return self.state in (aioimaplib.CONNECTED, aioimaplib.LOGOUT) or (
            pending is not None and pending.name == "LOGOUT"
        )


class _PinnedImap(aioimaplib.IMAP4):  # type: ignore[misc]
    """IMAP4 that connects to a given address and checks TLS against the host name."""

    def __init__(
        self, address: str, port: int, server_hostname: str, tls: ssl.SSLContext | None
    ) -> None:
        self._server_hostname = server_hostname
        super().__init__(host=address, port=port, timeout=TIMEOUT, ssl_context=tls)
        self.lost: asyncio.Event = self.protocol.lost

    def create_client(
        self, host: str, port: int, loop: Any, conn_lost_cb: Any = None, ssl_context: Any = None
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = EndingProtocol(local_loop)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(
                lambda: self.protocol,
                host,
                port,
                ssl=ssl_context,
                server_hostname=self._server_hostname if ssl_context else None,
            )
        )


Credentials = str | TokenSource
"""A password, or where OAuth2 access tokens come from."""


async def open_session(
    mailbox: ImapMailbox,
    credentials: Credentials,
    resolve: Resolver = system_resolver,
    tls_context: ssl.SSLContext | None = None,
) -> _PinnedImap:
    """Connect, secure and log in: an authenticated aioimaplib session."""
    address = await checked_address(mailbox, resolve)
    context = tls_context or ssl.create_default_context()
    implicit = context if mailbox.tls == "ssl" else None
    imap = _PinnedImap(address, mailbox.port, mailbox.host, implicit)
    try:
        await imap.wait_hello_from_server()
        if mailbox.tls == "starttls":
            await _starttls(imap, mailbox.name, context, mailbox.host)
        await _log_in(imap, mailbox, credentials)
        await imap.protocol.capability()  # the list grows after login
    except (TimeoutError, OSError, aioimaplib.AioImapException) as exc:  # TLS errors too
        await shut(imap)
        raise ImapUnavailable(
            f"imap {mailbox.name}: cannot connect ({type(exc).__name__})"
        ) from exc
    except BaseException:
        await shut(imap)
        raise
    return imap


async def _starttls(imap: Any, name: str, context: ssl.SSLContext, host: str) -> None:
    protocol = imap.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise ImapUnavailable(f"imap {name}: server does not offer STARTTLS")
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), TIMEOUT)
    if response.result != "OK":
        raise ImapUnavailable(f"imap {name}: STARTTLS refused")
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, context, server_hostname=host
    )
    await protocol.capability()  # capabilities before TLS must be forgotten (RFC 3501 6.2.1)


async def _log_in(imap: Any, mailbox: ImapMailbox, credentials: Credentials) -> None:
    """LOGIN, or AUTHENTICATE with a token; a refused token is refreshed once and tried again."""
    if isinstance(credentials, str):
        response = await imap.login(quote(mailbox.username), credentials)
        if response.result != "OK":
            raise ImapUnavailable(f"imap {mailbox.name}: login refused")
        return
    mechanism = mailbox.auth.upper()
    if f"AUTH={mechanism}" not in imap.protocol.capabilities:
        raise ConfigError(
            f"imap.mailboxes[{mailbox.name}].auth: the server does not offer {mechanism}"
        )
    for refresh in (False, True):
        token = await credentials.token(refresh=refresh)
        if mechanism == "XOAUTH2":
            initial = xoauth2_response(mailbox.username, token)
        else:
            initial = oauthbearer_response(mailbox.username, token, mailbox.host, mailbox.port)
        if await sasl_authenticate(imap, mechanism, initial, SASL_ABORT[mechanism]):
            return
        log.info("imap token refused", extra={"mailbox": mailbox.name, "refreshed": refresh})
    raise ImapUnavailable(f"imap {mailbox.name}: token refused")


async def shut(imap: Any) -> None:
    """Log out politely when possible, then drop the connection; never raises."""
    try:
        if not imap.lost.is_set() and imap.get_state() in ("AUTH", "SELECTED"):
            await asyncio.wait_for(imap.logout(), 5)
    except Exception:  # the connection is going away either way
        log.debug("imap logout failed", exc_info=True)
    transport = getattr(imap.protocol, "transport", None)
    if transport is not None:
        transport.close()


class SessionEnded(Exception):
    """The server closed the connection (a token expiring ends the session on some servers)."""
