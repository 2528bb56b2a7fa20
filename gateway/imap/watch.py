"""Running a puller: one pass (`imap pull --once`), or watching (IDLE or polling) under `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from gateway.errors import ConfigError
from gateway.imap.client import ImapClient, Resolver, system_resolver
from gateway.imap.puller import (
    DEFAULT_BATCH,
    Checkpoint,
    MailboxPuller,
    PassSummary,
    Progress,
)
from gateway.settings import ImapMailbox
from gateway.storage.leases import LeaseLost, new_holder_id

log = logging.getLogger("gateway.imap")
MIN_LEASE = timedelta(minutes=5)
MAX_BACKOFF = 300.0


def lease_ttl(mailbox: ImapMailbox) -> timedelta:
    """How long a mailbox's lease lasts: as configured, else three polls and at least 5 min."""
    if mailbox.lease is not None:
        return mailbox.lease
    return max(MIN_LEASE, mailbox.poll_interval * 3)


def mailbox_password(mailbox: ImapMailbox) -> str:
    """The password from the config, else from password_file (first line)."""
    if mailbox.password.get_secret_value():
        return mailbox.password.get_secret_value()
    if mailbox.password_file is None:
        raise ConfigError(f"imap.mailboxes[{mailbox.name}]: password or password_file is required")
    try:
        lines = mailbox.password_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise ConfigError(
            f"imap.mailboxes[{mailbox.name}]: password_file {mailbox.password_file} is unreadable"
        ) from None
    if not lines or not lines[0]:
        raise ConfigError(f"imap.mailboxes[{mailbox.name}]: password_file is empty")
    return lines[0]


@dataclass
class ImapSeams:
    """What tests (and unusual deployments) may swap: DNS, TLS trust, batch size, checkpoints.

    `concurrency` is how many messages of one mailbox the pipeline holds at
    once; `strip_batch` how many accepted messages are stubbed together.
    """

    resolve: Resolver = system_resolver
    tls_context: ssl.SSLContext | None = None
    batch_size: int = DEFAULT_BATCH
    concurrency: int | None = None
    """None: the `imap.concurrency` setting."""
    strip_batch: int | None = None
    """None: the `imap.strip_batch` setting."""
    checkpoint: Checkpoint | None = None
    holder: str = field(default_factory=new_holder_id)


class MailboxRunner:
    """A puller plus how to connect: `pull_once()` for the CLI, `watch()` for serve."""

    def __init__(self, puller: MailboxPuller, connect: Callable[[], Awaitable[ImapClient]]) -> None:
        self.puller = puller
        self.connect = connect
        self.mailbox = puller.mailbox
        self.lease = puller.lease

    async def pull_once(self, progress: Progress | None = None) -> PassSummary:
        """One pass under the lease; a busy summary when another node holds it."""
        if not await asyncio.to_thread(self.lease.acquire):
            return PassSummary(self.mailbox.name, busy=True)
        try:
            client = await self.connect()
            try:
                return await self.puller.run_pass(client, progress)
            finally:
                await client.close()
        finally:
            await asyncio.to_thread(self.lease.release)

    async def watch(self, stop: asyncio.Event) -> None:
        """Pass, then wait for news (IDLE, else poll); reconnect with back-off on failure."""
        delay = 1.0
        poll = self.mailbox.poll_interval.total_seconds()
        try:
            while not stop.is_set():
                try:
                    if await asyncio.to_thread(self.lease.acquire):
                        await self._watch_connected(stop)
                        delay = 1.0
                    else:
                        await _sleep(stop, poll)
                    continue
                except ConfigError as exc:  # a private host: nothing will change until reconfigured
                    log.error("mailbox not pulled: %s", exc.message, extra=self._extra())
                    return
                except Exception as exc:
                    log.warning(
                        "imap watch failed, retrying in %.0fs",
                        delay,
                        extra={**self._extra(), "error": type(exc).__name__},
                    )
                await _sleep(stop, delay)
                delay = min(delay * 2, MAX_BACKOFF)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)

    async def _watch_connected(self, stop: asyncio.Event) -> None:
        poll = self.mailbox.poll_interval.total_seconds()
        client = await self.connect()
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.lease.renew)
                summary = await self.puller.run_pass(client)
                if summary.examined or summary.deferred:
                    log.info(summary.line(), extra=self._extra())
                await client.select(self.mailbox.folders[0])
                if not await client.wait_for_news(poll, stop):
                    await _sleep(stop, poll)
        except LeaseLost:
            log.warning("imap lease lost to another node", extra=self._extra())
        finally:
            await client.close()

    def _extra(self) -> dict[str, str]:
        return {"mailbox": self.mailbox.name}


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
