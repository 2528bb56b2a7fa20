"""One pass over a mailbox: fetch new messages, ingest them, then strip or quarantine them.

How a pass goes.  The folder's new UIDs are taken in batches (`batch_size`:
the unit of lease renewal and of the folder cursor).  A batch's sizes come
in one FETCH, then its bodies in groups of at most `concurrency` messages
and `fetch_bytes` octets, one UID FETCH per group, read ahead of the
pipeline.  The pipeline runs for up to `concurrency` messages at once (it is
async and thread-safe: the SMTP server runs it for many sessions).  One task,
the tail, then takes the messages in UID order and does everything that
changes state, on the server or in the database.

Per message, the state in the database moves fetched -> stored -> stripped
(or fetched -> quarantined), each committed before the server action that
depends on it:

* `fetched` is committed for a whole group, in one transaction, before any
  of its messages enters the pipeline.  Crash before `stored`: the message
  is still on the server; the next pass ingests it again and the pipeline's
  dedupe (Message-ID + SHA-256) answers with the reference already stored,
  without storing twice.  With several messages in the pipeline at once,
  several may be in that window at a crash: the argument holds for each
  alone.  Two copies of the same bytes in one pass never run at once (the
  second waits for the first), so the dedupe, not a race, answers it.
* `stored` is committed by the tail just before the message's stub is
  appended; a message whose pipeline finished early waits for the ones
  before it.  The tail takes up to `strip_batch` ready messages at once (8
  by default, the `imap.strip_batch` setting): one commit of their `stored`,
  their APPENDs, one UID STORE and one UID EXPUNGE of the set, so a crash
  may leave the whole run `stored`.  With `strip_batch` 1 a crash leaves at
  most the message being stripped `stored`, and every earlier one of the
  pass stripped, quarantined or pending.  Either way the next pass strips a
  `stored` message without ingesting it again.
* Crash after a stub was appended but before the original was expunged:
  the stub is found by its marker header and not appended twice (looked for
  whenever one could exist: a message an earlier pass stored, a dedupe hit,
  scrub mode).
* `stripped`, with its audit line, is committed after the expunge: in the
  same transaction as the next `stored` when the next message is ready (one
  fsync for both), otherwise at once, and before a failed pass gives up.  A
  crash in between leaves `stored` on a UID the server no longer has; the
  next pass finds it gone and skips it, as a crash between the expunge and
  the commit always could.
* On Gmail (`X-GM-EXT-1`) the expunge is followed by deleting the originals
  from "All Mail" too (`gateway.imap.gmail`), before their `stripped` is
  pending: if that fails they stay `stored`, which the daily check reports.
* Refused messages next to each other in UID order go to quarantine with one
  UID MOVE, and their `quarantined` states commit together after it.
* The cursor passes a batch only once each of its messages is stripped,
  quarantined or left `fetched` (deferred): those are re-read first.

Only a committed outcome leads to deleting anything on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from functools import partial
from typing import Any, Protocol, TypeVar

from gateway.errors import CodeLocked, MalformedMessage, MessageRefused, TemporaryFailure
from gateway.imap.client import GMAIL, FetchedMessage, ImapClient
from gateway.imap.gmail import remove_originals
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
from gateway.ingest.pipeline import Inbound, Pipeline, refusal_audit_data
from gateway.ingest.recipients import Recipient, RecipientPolicy, Role
from gateway.logs import correlation
from gateway.model import Channel, Clock
from gateway.settings import ImapMailbox
from gateway.storage.imap import (
    FETCHED,
    QUARANTINED,
    STORED,
    STRIPPED,
    AuditLine,
    ImapState,
    MessageKey,
    StateChange,
    held_by,
)
from gateway.storage.leases import DbLease

log = logging.getLogger("gateway.imap")
V = TypeVar("V")
Checkpoint = Callable[[str, MessageKey], None]
"""Called after each state is committed (a seam for tests that stop a pass there)."""

DEFAULT_BATCH = 100
DEFAULT_CONCURRENCY = 8
DEFAULT_FETCH_BYTES = 16 * 1024 * 1024
DEFAULT_STRIP_BATCH = 8
"""Accepted messages stubbed together: one `stored` commit, their APPENDs, one expunge.

1 keeps the crash states of a one-at-a-time puller (a crash finds every
earlier message of the pass stripped, at most one `stored`); more commits
and expunges once per run instead of once per message, which the tail,
acting in UID order, otherwise waits for message by message (a commit
shares the writer with the pipeline's own): 34 -> 46 msg/s pulling
1,500 x 100 KB (`bench.imapprofile`).
"""


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


# -- what the tail is to do with a message -------------------------------------------
@dataclass(frozen=True, slots=True)
class _Skip:
    """Nothing: a stub, a vanished UID, a message with nothing to scrub."""


@dataclass(frozen=True, slots=True)
class _Defer:
    """Leave it on the server, `fetched`: the next pass tries again."""


@dataclass(frozen=True, slots=True)
class _Quarantine:
    refusal: MessageRefused


@dataclass(frozen=True, slots=True)
class _Strip:
    """Replace the message by `stub`."""

    references: list[str]
    stub: bytes
    documents: int
    store: bool  # ingested by this pass: `stored` commits before the server is touched
    new: bool  # a new submission, not a dedupe hit
    search: bool  # a stub of these bytes may be on the server already
    action: str = "imap.stripped"


_Verdict = _Skip | _Defer | _Quarantine | _Strip
_SKIP, _DEFER = _Skip(), _Defer()


@dataclass(slots=True)
class _Entry:
    """A UID of the batch in the tail's queue, and the work that decides its fate."""

    key: MessageKey
    message: FetchedMessage | None  # None: vanished, or a stub (never examined)
    digest: str
    size: int
    verdict: asyncio.Future[_Verdict]


@dataclass(frozen=True, slots=True)
class _Group:
    """UIDs fetched with one command."""

    uids: list[int]
    sizes: Mapping[int, int]

    @property
    def size(self) -> int:
        return sum(self.sizes.get(uid, 0) for uid in self.uids)


@dataclass(frozen=True, slots=True)
class _BatchEnd:
    """Queued after a batch's last UID: the cursor may pass it once the tail gets here."""

    last_uid: int


class MailboxPuller:
    """Pulls one configured mailbox over an open client; holds its lease while doing so."""

    def __init__(
        self,
        mailbox: ImapMailbox,
        deps: PullerDeps,
        lease: DbLease,
        *,
        batch_size: int = DEFAULT_BATCH,
        concurrency: int = DEFAULT_CONCURRENCY,
        fetch_bytes: int = DEFAULT_FETCH_BYTES,
        strip_batch: int = DEFAULT_STRIP_BATCH,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        if min(batch_size, concurrency, fetch_bytes, strip_batch) < 1:
            raise ValueError(
                "batch_size, concurrency, fetch_bytes and strip_batch must be positive"
            )
        self.mailbox = mailbox
        self.deps = deps
        self.lease = lease
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.fetch_bytes = fetch_bytes
        self.strip_batch = strip_batch
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
        folder_pass = _FolderPass(self, client, folder, selected.uidvalidity, summary, progress)
        await folder_pass.run(uids, last_uid)

    # -- deciding a message's fate (run concurrently, touches no state) -----------
    async def ingest(self, key: MessageKey, message: FetchedMessage, digest: str) -> _Verdict:
        """Run the pipeline; strip when accepted, quarantine when refused, else defer."""
        try:
            outcome = await self.deps.pipeline.ingest(self._inbound(message))
        except (CodeLocked, TemporaryFailure) as exc:  # the sender or we will be ready later
            log.info("deferred", extra={**_where(key), "reason": type(exc).__name__})
            return _DEFER
        except MessageRefused as exc:
            return _Quarantine(exc)
        except Exception:  # our fault: never lose the message, try again next pass
            log.exception("ingestion failed", extra=_where(key))
            return _DEFER
        references = [outcome.reference] if outcome.reference else []
        # The pipeline's own parse of these bytes: the stub needs no second one.
        stub, documents = await asyncio.to_thread(
            self._stub, message.raw, references, digest, outcome.message
        )
        return _Strip(
            references,
            stub,
            documents,
            store=True,
            new=not outcome.duplicate,
            search=outcome.duplicate,
        )

    async def restrip(
        self, message: FetchedMessage, digest: str, references: list[str]
    ) -> _Verdict:
        """A message an earlier pass stored (or the same bytes under another UID): strip it."""
        stub, documents = await asyncio.to_thread(self._stub, message.raw, references, digest)
        return _Strip(references, stub, documents, store=False, new=False, search=True)

    async def scrub(self, message: FetchedMessage, digest: str) -> _Verdict:
        """Strip a message whose every document the gateway already holds; ingest nothing."""
        try:
            parsed = await asyncio.to_thread(self._parse, message.raw)
        except MalformedMessage:
            return _SKIP
        digests = await asyncio.to_thread(_attachment_digests, parsed)
        if not digests or not self._addressed_to_gateway(message.raw):
            return _SKIP
        holders = await asyncio.to_thread(self.deps.state.holders, digests)
        references = held_by(holders, digests)
        if not references:
            return _SKIP
        stub = await asyncio.to_thread(build_stub, message.raw, parsed, references, digest)
        return _Strip(
            references,
            stub,
            len(parsed.attachments),
            store=False,
            new=False,
            search=True,
            action="imap.scrubbed",
        )

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

    def _addressed_to_gateway(self, raw: bytes) -> bool:
        for address in recipient_addresses(raw):
            try:
                self.deps.recipients.resolve(address)
                return True
            except MessageRefused:
                continue
        return False

    def _parse(self, raw: bytes) -> ParsedMessage:
        pipeline = self.deps.pipeline
        return parse_message(raw, pipeline.limits, id_domain=pipeline.id_domain)

    def _stub(
        self, raw: bytes, references: list[str], digest: str, parsed: ParsedMessage | None = None
    ) -> tuple[bytes, int]:
        """The stub and the number of documents it replaces (built off the event loop).

        `parsed` is `raw` as the pipeline parsed it, if it did; else it is parsed here.
        """
        if parsed is None:
            parsed = self._parse(raw)
        return build_stub(raw, parsed, references, digest), len(parsed.attachments)

    # -- audit lines -----------------------------------------------------------------
    def strip_event(self, key: MessageKey, digest: str, verdict: _Strip) -> AuditLine:
        data = {
            **_where(key),
            "raw_sha256": digest,
            "references": list(verdict.references),
            "documents": verdict.documents,
        }
        return self._event(verdict.action, verdict.references, data)

    def quarantine_event(self, key: MessageKey, digest: str, refusal: MessageRefused) -> AuditLine:
        data = {
            **_where(key),
            "raw_sha256": digest,
            "quarantine": self.mailbox.quarantine,
            **refusal_audit_data(refusal),
        }
        return self._event("imap.quarantined", [], data)

    def _event(self, action: str, references: Sequence[str], data: dict[str, Any]) -> AuditLine:
        subject = references[0] if references else ""
        return AuditLine(action, f"imap:{self.mailbox.name}", subject, data)


class _FolderPass:
    """One pass over one selected folder: reads ahead, judges concurrently, acts in UID order."""

    def __init__(
        self,
        puller: MailboxPuller,
        client: ImapClient,
        folder: str,
        uidvalidity: int,
        summary: PassSummary,
        progress: Progress,
    ) -> None:
        self.puller, self.client, self.state = puller, client, puller.deps.state
        self.mailbox, self.folder, self.uidvalidity = puller.mailbox.name, folder, uidvalidity
        self.summary, self.progress = summary, progress
        self.slots = asyncio.Semaphore(puller.concurrency)
        self.plan: deque[_Group | _BatchEnd] = deque()  # of the batch being read
        self.queue: deque[_Entry | _BatchEnd] = deque()  # read, waiting for the tail
        self.pending: list[StateChange] = []  # to commit with the next write
        self.latest: dict[str, asyncio.Task[_Verdict]] = {}  # by raw SHA-256, while queued
        self.abandoned = False
        self.batches: Iterator[Sequence[int]] = iter(())
        self.last_uid = 0

    async def run(self, uids: Sequence[int], last_uid: int) -> None:
        self.batches, self.last_uid = _chunks(uids, self.puller.batch_size), last_uid
        try:
            while True:
                await self._read_ahead()
                if not self.queue:
                    break
                head = self.queue.popleft()
                if isinstance(head, _BatchEnd):
                    await self._end_batch(head)
                else:
                    await self._finish(head)
            await self._flush()
        except Exception:
            # Record what the server already shows (a `stripped` waiting for the next
            # write) before giving up on the pass; a crash could not, and need not.
            with contextlib.suppress(Exception):
                await self._flush()
            raise
        finally:
            await self._settle()

    def _key(self, uid: int) -> MessageKey:
        return MessageKey(self.mailbox, self.folder, self.uidvalidity, uid)

    # -- reading ahead -------------------------------------------------------------
    async def _read_ahead(self) -> None:
        """Fetch groups while the window has room, so the pipeline always has the next ones."""
        while await self._planned():
            unit = self.plan[0]
            if isinstance(unit, _Group) and not self._room_for(unit):
                return
            self.plan.popleft()
            if isinstance(unit, _BatchEnd):
                self.queue.append(unit)
            else:
                await self._fetch(unit)

    async def _planned(self) -> bool:
        """Whether a group or batch end is planned; plans the next batch when none is."""
        if self.plan:
            return True
        batch = next(self.batches, None)
        if batch is None:
            return False
        await asyncio.to_thread(self.puller.lease.renew)
        sizes = await self.client.sizes(batch)
        self.plan.extend(_groups(batch, sizes, self.puller.concurrency, self.puller.fetch_bytes))
        self.plan.append(_BatchEnd(batch[-1]))
        return True

    def _room_for(self, group: _Group) -> bool:
        """At most two groups' worth (count and bytes) waits for the tail; one always fits."""
        held = [entry for entry in self.queue if isinstance(entry, _Entry)]
        if not held:
            return True
        count = len(held) + len(group.uids)
        size = sum(entry.size for entry in held) + group.size
        return count <= 2 * self.puller.concurrency and size <= 2 * self.puller.fetch_bytes

    async def _fetch(self, group: _Group) -> None:
        present = [uid for uid in group.uids if uid in group.sizes]
        fetched = {message.uid: message for message in await self.client.fetch(present)}
        entries = [
            self._entry(uid, fetched.get(uid), group.sizes.get(uid, 0)) for uid in group.uids
        ]
        await self._start([entry for entry in entries if entry.message is not None])
        self.queue.extend(entries)

    def _entry(self, uid: int, message: FetchedMessage | None, size: int) -> _Entry:
        """The queue entry of a UID; its verdict is a placeholder until `_spawn` (skips: done)."""
        verdict: asyncio.Future[_Verdict] = asyncio.get_running_loop().create_future()
        if message is None or is_stub(message.raw):
            verdict.set_result(_SKIP)
            return _Entry(self._key(uid), None, "", size, verdict)
        digest = hashlib.sha256(message.raw).hexdigest()
        return _Entry(self._key(uid), message, digest, size, verdict)

    async def _start(self, entries: list[_Entry]) -> None:
        """Commit `fetched` for the group's new messages, then set their work going."""
        puller = self.puller
        if not entries:
            return
        messages = {entry.key.uid: _message(entry) for entry in entries}
        if puller.mailbox.mode == "scrub":
            for entry in entries:
                self._spawn(entry, partial(puller.scrub, messages[entry.key.uid], entry.digest))
            return
        known = await asyncio.to_thread(
            self.state.stored_references,
            self.mailbox,
            self.folder,
            self.uidvalidity,
            {entry.key.uid: entry.digest for entry in entries},
        )
        fresh = [entry for entry in entries if entry.key.uid not in known]
        await self._commit([StateChange(entry.key, FETCHED, entry.digest) for entry in fresh])
        for entry in entries:
            uid, message = entry.key.uid, messages[entry.key.uid]
            if uid in known:
                self._spawn(entry, partial(puller.restrip, message, entry.digest, known[uid]))
            else:
                self._spawn(entry, partial(puller.ingest, entry.key, message, entry.digest))

    def _spawn(self, entry: _Entry, work: Callable[[], Awaitable[_Verdict]]) -> None:
        """Run `work` in a pipeline slot, after any earlier message with the same bytes."""
        before = self.latest.get(entry.digest)

        async def run() -> _Verdict:
            if before is not None:
                await asyncio.wait([before])
            async with self.slots:
                if self.abandoned:
                    return _SKIP
                with correlation(message_correlation_id(entry.key)):
                    return await work()

        task = asyncio.create_task(run())
        entry.verdict = task
        self.latest[entry.digest] = task

    # -- the tail: acting in UID order ---------------------------------------------
    async def _finish(self, entry: _Entry) -> None:
        if not entry.verdict.done():
            await self._flush()  # nothing committed waits on a message still in the pipeline
        verdict = await entry.verdict
        self._forget(entry)
        self.summary.examined += int(entry.message is not None)
        if isinstance(verdict, _Strip):
            await self._strip([(entry, verdict), *self._strips_next()])
            return
        if isinstance(verdict, _Quarantine):
            await self._quarantine([(entry, verdict), *self._refused_next()])
            return
        if isinstance(verdict, _Defer):
            self.summary.deferred += 1
        else:
            self.summary.skipped += 1
        self.progress.advance(1)

    def _forget(self, entry: _Entry) -> None:
        if self.latest.get(entry.digest) is entry.verdict:
            del self.latest[entry.digest]

    def _strips_next(self) -> list[tuple[_Entry, _Strip]]:
        """Messages right behind the head, ready to be stubbed with it (up to `strip_batch`)."""
        return self._run_of(_Strip, self.puller.strip_batch - 1)

    def _run_of(self, kind: type[V], limit: int | None = None) -> list[tuple[_Entry, V]]:
        """Take the entries at the head whose verdict is in and of `kind` (at most `limit`)."""
        run: list[tuple[_Entry, V]] = []
        while self.queue and (limit is None or len(run) < limit):
            head = self.queue[0]
            if not isinstance(head, _Entry):
                break
            verdict = _ready(head.verdict)
            if not isinstance(verdict, kind):
                break
            self.queue.popleft()
            self._forget(head)
            self.summary.examined += 1
            run.append((head, verdict))
        return run

    async def _strip(self, run: list[tuple[_Entry, _Strip]]) -> None:
        """`stored` for the run (and what is pending) in one commit, the stubs, one expunge."""
        stored = [
            StateChange(entry.key, STORED, entry.digest, reference=_first(verdict.references))
            for entry, verdict in run
            if verdict.store
        ]
        await self._commit(stored)  # with nothing to store, still records the last `stripped`
        for entry, verdict in run:
            found = verdict.search and await self.client.search_header(
                STUB_HEADER, stub_marker(entry.digest)
            )
            if not found:  # a crash after APPEND must not leave two stubs
                message = _message(entry)
                await self.client.append(
                    entry.key.folder,
                    verdict.stub,
                    message.flags,
                    message.internal_date,
                    probe=(STUB_HEADER, stub_marker(entry.digest)),  # the same, resuming
                )
        await self.client.delete([entry.key.uid for entry, _ in run])
        await self._remove_from_all_mail([entry for entry, _ in run])
        for entry, verdict in run:
            event = self.puller.strip_event(entry.key, entry.digest, verdict)
            self.pending.append(StateChange(entry.key, STRIPPED, entry.digest, event=event))
            with correlation(message_correlation_id(entry.key)):
                log.info(
                    verdict.action,
                    extra={**_where(entry.key), "references": list(verdict.references)},
                )
            self.summary.stored += int(verdict.store and verdict.new)
            self.summary.scrubbed += int(verdict.action == "imap.scrubbed")
            self.summary.stripped += int(verdict.action != "imap.scrubbed")
        self.progress.advance(len(run))

    async def _remove_from_all_mail(self, entries: list[_Entry]) -> None:
        """On Gmail the expunged originals live on in "All Mail": delete them there too.

        Their `stripped` is not pending yet: should this fail, the pass stops
        with them `stored`, and the next pass finds their UIDs gone.
        """
        if not self.client.has(GMAIL):
            return
        ids = [str(e.message.gm_msgid) for e in entries if e.message and e.message.gm_msgid]
        await remove_originals(self.client, self.folder, self.uidvalidity, ids)

    def _refused_next(self) -> list[tuple[_Entry, _Quarantine]]:
        """The refused messages right behind the head whose verdict is in: moved with it."""
        return self._run_of(_Quarantine)

    async def _quarantine(self, run: list[tuple[_Entry, _Quarantine]]) -> None:
        puller = self.puller
        await self.client.move([entry.key.uid for entry, _ in run], puller.mailbox.quarantine)
        await self._commit(
            [
                StateChange(
                    entry.key,
                    QUARANTINED,
                    entry.digest,
                    event=puller.quarantine_event(entry.key, entry.digest, verdict.refusal),
                )
                for entry, verdict in run
            ]
        )
        for entry, verdict in run:
            with correlation(message_correlation_id(entry.key)):
                # The refusal's class only: its text may name a sender's document.
                log.info(
                    "imap.quarantined",
                    extra={**_where(entry.key), "reason": type(verdict.refusal).__name__},
                )
        self.summary.quarantined += len(run)
        self.progress.advance(len(run))

    async def _end_batch(self, end: _BatchEnd) -> None:
        await self._flush()
        self.last_uid = max(self.last_uid, end.last_uid)
        await asyncio.to_thread(
            self.state.set_cursor, self.mailbox, self.folder, self.uidvalidity, self.last_uid
        )

    # -- state ---------------------------------------------------------------------
    async def _commit(self, changes: list[StateChange]) -> None:
        """Commit `changes` after what is pending, in one transaction; then the checkpoints."""
        changes, self.pending = [*self.pending, *changes], []
        if not changes:
            return
        await asyncio.to_thread(self.state.commit, changes)
        checkpoint = self.puller.checkpoint
        if checkpoint is not None:
            for change in changes:
                checkpoint(change.state, change.key)

    async def _flush(self) -> None:
        await self._commit([])

    async def _settle(self) -> None:
        """On the way out: start no more work, and let the pipeline finish what it holds.

        A message left in the pipeline by an interrupted pass is still
        `fetched`: whatever the pipeline did with it, the next pass's dedupe
        answers for it.  Waiting keeps its work from outliving the pass.
        """
        self.abandoned = True
        queued = [entry.verdict for entry in self.queue if isinstance(entry, _Entry)]
        await asyncio.gather(*queued, return_exceptions=True)


def _first(references: list[str]) -> str | None:
    return references[0] if references else None


def _message(entry: _Entry) -> FetchedMessage:
    if entry.message is None:
        raise ValueError(f"UID {entry.key.uid} has no message to work on")
    return entry.message


def _ready(future: asyncio.Future[_Verdict]) -> _Verdict | None:
    """The verdict when it is in (and is not an error), else None."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _groups(
    batch: Sequence[int], sizes: Mapping[int, int], count: int, max_bytes: int
) -> list[_Group]:
    """Consecutive UIDs in groups of at most `count` and `max_bytes` (a larger one alone)."""
    groups: list[_Group] = []
    current: list[int] = []
    total = 0
    for uid in batch:
        size = sizes.get(uid, 0)
        if current and (len(current) == count or total + size > max_bytes):
            groups.append(_Group(current, sizes))
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        groups.append(_Group(current, sizes))
    return groups


def _attachment_digests(parsed: ParsedMessage) -> list[str]:
    return [hashlib.sha256(a.content).hexdigest() for a in parsed.attachments]


def message_correlation_id(key: MessageKey) -> str:
    """One IMAP message's correlation id: the same on every pass that sees it (12 hex digits)."""
    where = f"{key.mailbox}\0{key.folder}\0{key.uidvalidity}\0{key.uid}"
    return "imap-" + hashlib.sha256(where.encode()).hexdigest()[:12]


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
