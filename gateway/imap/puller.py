"""One pass over a mailbox: fetch each new message, ingest it, then strip or quarantine it.

Per message, the state in the database moves fetched -> stored -> stripped
(or fetched -> quarantined), each step committed in its own transaction
before the next server action:

* crash before `stored`: the message is still on the server; the next pass
  ingests it again and the pipeline's dedupe (Message-ID + SHA-256) answers
  with the reference already stored, without storing twice;
* crash after `stored`: the next pass finds the state and strips without
  ingesting at all;
* crash after the stub was appended but before the original was expunged:
  the stub is found by its marker header and not appended twice.

Only a committed outcome leads to deleting anything on the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any, Protocol

from gateway.errors import CodeLocked, MalformedMessage, MessageRefused, TemporaryFailure
from gateway.imap.client import FetchedMessage, ImapClient
from gateway.imap.lease import DbLease
from gateway.imap.state import (
    FETCHED,
    QUARANTINED,
    STORED,
    STRIPPED,
    AuditLine,
    ImapState,
    MessageKey,
    held_by,
)
from gateway.imap.stub import (
    STUB_HEADER,
    build_stub,
    field_value,
    is_stub,
    recipient_addresses,
    split_header,
    stub_marker,
)
from gateway.ingest.mime import ParsedMessage, parse_message
from gateway.ingest.pipeline import Inbound, Pipeline
from gateway.ingest.recipients import Recipient, RecipientPolicy, Role
from gateway.model import Channel, Clock
from gateway.settings import ImapMailbox

log = logging.getLogger("gateway.imap")
Checkpoint = Callable[[str, MessageKey], None]
"""Called after each state is committed (a seam for tests that stop a pass there)."""

DEFAULT_BATCH = 100


class Progress(Protocol):
    def total(self, count: int) -> None: ...
    def advance(self, count: int) -> None: ...


class _NoProgress:
    def total(self, count: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass


@dataclass
class PassSummary:
    """What one pass did, per mailbox."""

    mailbox: str
    examined: int = 0
    stored: int = 0  # new submissions (a dedupe hit is not counted)
    stripped: int = 0
    quarantined: int = 0
    scrubbed: int = 0
    deferred: int = 0  # temporary failure: left on the server for the next pass
    skipped: int = 0  # stubs, vanished messages, nothing to scrub
    busy: bool = False  # another node holds the mailbox's lease

    def line(self) -> str:
        if self.busy:
            return f"{self.mailbox}: skipped, another gateway is pulling it"
        parts = ("examined", "stored", "stripped", "quarantined", "scrubbed", "deferred", "skipped")
        return f"{self.mailbox}: " + ", ".join(f"{getattr(self, p)} {p}" for p in parts)


@dataclass(frozen=True)
class PullerDeps:
    """The gateway services a puller uses (built by `watch.runner_for`)."""

    pipeline: Pipeline
    recipients: RecipientPolicy
    state: ImapState
    clock: Clock


class MailboxPuller:
    """Pulls one configured mailbox over an open client; holds its lease while doing so."""

    def __init__(
        self,
        mailbox: ImapMailbox,
        deps: PullerDeps,
        lease: DbLease,
        *,
        batch_size: int = DEFAULT_BATCH,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.deps = deps
        self.lease = lease
        self.batch_size = batch_size
        self.checkpoint = checkpoint

    # -- a pass ------------------------------------------------------------------
    async def run_pass(self, client: ImapClient, progress: Progress | None = None) -> PassSummary:
        summary = PassSummary(self.mailbox.name)
        if self.mailbox.mode == "ingest":
            await client.ensure_folder(self.mailbox.quarantine)
        for folder in self.mailbox.folders:
            await self._pull_folder(client, folder, summary, progress or _NoProgress())
        return summary

    async def _pull_folder(
        self, client: ImapClient, folder: str, summary: PassSummary, progress: Progress
    ) -> None:
        name, state = self.mailbox.name, self.deps.state
        selected = await client.select(folder)
        cursor = await asyncio.to_thread(state.cursor, name, folder)
        last_uid = 0
        if cursor is not None and cursor[0] == selected.uidvalidity:
            last_uid = cursor[1]
        else:
            if cursor is not None:  # dedupe on Message-ID + SHA-256 keeps this from storing twice
                log.warning(
                    "UIDVALIDITY changed: re-reading the folder",
                    extra={"mailbox": name, "folder": folder, "old": cursor[0]},
                )
            await asyncio.to_thread(state.set_cursor, name, folder, selected.uidvalidity, 0)
        pending = await asyncio.to_thread(state.pending_uids, name, folder, selected.uidvalidity)
        uids = sorted(set(await client.uids_after(last_uid)) | set(pending))
        progress.total(len(uids))
        for batch in _chunks(uids, self.batch_size):
            await asyncio.to_thread(self.lease.renew)
            for uid in batch:
                key = MessageKey(name, folder, selected.uidvalidity, uid)
                await self._one(client, key, summary)
                progress.advance(1)
            last_uid = max(last_uid, batch[-1])
            await asyncio.to_thread(state.set_cursor, name, folder, selected.uidvalidity, last_uid)

    async def _one(self, client: ImapClient, key: MessageKey, summary: PassSummary) -> None:
        message = await client.fetch(key.uid)
        if message is None or is_stub(message.raw):
            summary.skipped += 1
            return
        summary.examined += 1
        digest = hashlib.sha256(message.raw).hexdigest()
        if self.mailbox.mode == "scrub":
            await self._scrub(client, key, message, digest, summary)
            return
        known = await asyncio.to_thread(self.deps.state.stored_references, key, digest)
        if known is None:
            known = await self._ingest(client, key, message, digest, summary)
            if known is None:
                return
        await self._strip(client, key, message, digest, known)
        summary.stripped += 1

    async def _ingest(
        self,
        client: ImapClient,
        key: MessageKey,
        message: FetchedMessage,
        digest: str,
        summary: PassSummary,
    ) -> list[str] | None:
        """Run the pipeline; the references to strip with, or None when not accepted."""
        await self._mark(key, FETCHED, digest)
        try:
            outcome = await self.deps.pipeline.ingest(self._inbound(message))
        except (CodeLocked, TemporaryFailure) as exc:  # the sender or we will be ready later
            log.info("deferred", extra={**_where(key), "reason": type(exc).__name__})
            summary.deferred += 1
            return None
        except MessageRefused as exc:
            await self._quarantine(client, key, digest, exc)
            summary.quarantined += 1
            return None
        except Exception:  # our fault: never lose the message, try again next pass
            log.exception("ingestion failed", extra=_where(key))
            summary.deferred += 1
            return None
        state = self.deps.state
        reference = outcome.reference
        submission_id = None
        if reference:
            submission_id = await asyncio.to_thread(state.submission_id, reference)
        await self._mark(key, STORED, digest, submission_id)
        summary.stored += 0 if outcome.duplicate else 1
        return [reference] if reference else []

    def _inbound(self, message: FetchedMessage) -> Inbound:
        return Inbound(
            raw=message.raw,
            mail_from=_from_address(message.raw),
            recipient=self._recipient(message.raw),
            channel=Channel.IMAP,
            # The "peer" of a pulled message is the mailbox: it names the channel in audit lines.
            peer_ip=f"imap:{self.mailbox.name}",
            received_at=self.deps.clock(),
        )

    def _recipient(self, raw: bytes) -> Recipient:
        """The first of the gateway's addresses the message went to; else a plain depot@."""
        for address in recipient_addresses(raw):
            try:
                return self.deps.recipients.resolve(address)
            except MessageRefused:
                continue
        return Recipient(Role.SUBMIT, "")

    # -- server actions ------------------------------------------------------------
    async def _strip(
        self,
        client: ImapClient,
        key: MessageKey,
        message: FetchedMessage,
        digest: str,
        references: Sequence[str],
        action: str = "imap.stripped",
    ) -> None:
        parsed = await asyncio.to_thread(self._parse, message.raw)
        already = await client.search_header(STUB_HEADER, stub_marker(digest))
        if not already:  # a crash after APPEND must not leave two stubs
            stub = build_stub(message.raw, parsed, references, digest)
            await client.append(key.folder, stub, message.flags, message.internal_date)
        await client.delete(key.uid)
        data = {
            **_where(key),
            "raw_sha256": digest,
            "references": list(references),
            "documents": len(parsed.attachments),
        }
        await self._mark(key, STRIPPED, digest, event=self._event(action, references, data))
        log.info(action, extra={**_where(key), "references": list(references)})

    async def _quarantine(
        self, client: ImapClient, key: MessageKey, digest: str, exc: MessageRefused
    ) -> None:
        await client.move(key.uid, self.mailbox.quarantine)
        reason = {"reason": type(exc).__name__, "detail": exc.message}
        data = {
            **_where(key),
            "raw_sha256": digest,
            "quarantine": self.mailbox.quarantine,
            **reason,
        }
        await self._mark(key, QUARANTINED, digest, event=self._event("imap.quarantined", [], data))
        log.info("imap.quarantined", extra={**_where(key), **reason})

    async def _scrub(
        self,
        client: ImapClient,
        key: MessageKey,
        message: FetchedMessage,
        digest: str,
        summary: PassSummary,
    ) -> None:
        """Strip a message whose every document the gateway already holds; ingest nothing."""
        try:
            parsed = await asyncio.to_thread(self._parse, message.raw)
        except MalformedMessage:
            summary.skipped += 1
            return
        digests = [hashlib.sha256(a.content).hexdigest() for a in parsed.attachments]
        references: list[str] = []
        if digests and self._addressed_to_gateway(message.raw):
            holders = await asyncio.to_thread(self.deps.state.holders, digests)
            references = held_by(holders, digests)
        if not references:
            summary.skipped += 1
            return
        await self._strip(client, key, message, digest, references, action="imap.scrubbed")
        summary.scrubbed += 1

    def _addressed_to_gateway(self, raw: bytes) -> bool:
        for address in recipient_addresses(raw):
            try:
                self.deps.recipients.resolve(address)
                return True
            except MessageRefused:
                continue
        return False

    # -- bookkeeping -------------------------------------------------------------
    def _parse(self, raw: bytes) -> ParsedMessage:
        pipeline = self.deps.pipeline
        return parse_message(raw, pipeline.limits, id_domain=pipeline.id_domain)

    async def _mark(
        self,
        key: MessageKey,
        state: str,
        digest: str,
        submission_id: int | None = None,
        event: AuditLine | None = None,
    ) -> None:
        await asyncio.to_thread(self.deps.state.mark, key, state, digest, submission_id, event)
        if self.checkpoint is not None:
            self.checkpoint(state, key)

    def _event(self, action: str, references: Sequence[str], data: dict[str, Any]) -> AuditLine:
        subject = references[0] if references else ""
        return AuditLine(action, f"imap:{self.mailbox.name}", subject, data)


def _where(key: MessageKey) -> dict[str, Any]:
    return {
        "mailbox": key.mailbox,
        "folder": key.folder,
        "uidvalidity": key.uidvalidity,
        "uid": key.uid,
    }


def _from_address(raw: bytes) -> str:
    fields, _ = split_header(raw)
    values = [field_value(f) for f in fields if f.name in ("return-path", "from")]
    addresses = [addr for _, addr in getaddresses(values) if addr]
    return addresses[0] if addresses else ""


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
