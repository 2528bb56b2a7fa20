"""Opening an IMAP session: address checks, TLS (implicit or STARTTLS), LOGIN or AUTHENTICATE.

aioimaplib speaks the protocol; `gateway.adapters.aioimaplib` adds what it
lacks (STARTTLS, connecting to the address we checked while verifying the
certificate against the host name, telling a lost connection at once, SASL
with an initial response).  This module decides: which address, which TLS,
LOGIN or AUTHENTICATE with an OAuth2 access token.
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

from gateway.adapters.aioimaplib import PinnedImap, sasl_authenticate, starttls
from gateway.errors import ConfigError, ImapUnavailable
from gateway.imap.oauth import SASL_ABORT, TokenSource, oauthbearer_response, xoauth2_response
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


Credentials = str | TokenSource
"""A password, or where OAuth2 access tokens come from."""


async def open_session(
    mailbox: ImapMailbox,
    credentials: Credentials,
    resolve: Resolver = system_resolver,
    tls_context: ssl.SSLContext | None = None,
) -> PinnedImap:
    """Connect, secure and log in: an authenticated aioimaplib session."""
    address = await checked_address(mailbox, resolve)
    context = tls_context or ssl.create_default_context()
    implicit = context if mailbox.tls == "ssl" else None
    imap = PinnedImap(address, mailbox.port, mailbox.host, implicit, timeout=TIMEOUT)
    try:
        await imap.wait_hello_from_server()
        if mailbox.tls == "starttls" and not await starttls(
            imap, context, mailbox.host, timeout=TIMEOUT
        ):
            raise ImapUnavailable(f"imap {mailbox.name}: STARTTLS not offered or refused")
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
