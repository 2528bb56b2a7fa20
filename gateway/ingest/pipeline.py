"""The ingestion pipeline shared by every channel: inbound message in, outcome out.

Stages: line endings -> MIME parse and limits -> sender authentication
(DKIM) -> registration -> the role's handler (code request, submission,
state); all but the first run in one worker thread, and a submission's
wait for its group commit on the event loop (`PendingCommit`).  Refusals are
audited in their own short transaction and raised for the adapter to map to
its wire.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import functools
import hashlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from gateway.errors import (
    BareLineEnding,
    DocumentRefused,
    MessageRefused,
    MessageTooLarge,
    SenderNotAuthenticated,
    SenderNotRegistered,
    UnknownRecipient,
)
from gateway.ingest.mime import MimeLimits, ParsedMessage, parse_message
from gateway.ingest.recipients import Recipient, Role
from gateway.ingest.senderauth import SenderAuthenticator, SenderVerdict
from gateway.metrics import Observe, no_observe, timed
from gateway.model import Channel, Clock
from gateway.storage.audit import append_event
from gateway.storage.db import Database, Reads
from gateway.storage.registrations import sender_registered

log = logging.getLogger("gateway.ingest")
P = ParamSpec("P")
R = TypeVar("R")


def has_bare_line_ending(raw: bytes) -> bool:
    """A CR not followed by LF, or an LF not preceded by CR: what SMTP smuggling is made of.

    Counting is done in C; a look-around regex over a 25 MB message is not.
    """
    pairs = raw.count(b"\r\n")
    return raw.count(b"\r") != pairs or raw.count(b"\n") != pairs


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message as an adapter received it."""

    raw: bytes
    mail_from: str
    recipient: Recipient
    channel: Channel
    peer_ip: str
    received_at: datetime
    tls: dict[str, str] | None = None
    credential_id: int | None = None
    credential_address_key: str | None = None
    bare_line_ending: bool | None = None
    """Whether `raw` holds a bare CR or LF, when the adapter saw it reading the message
    (SMTP's DATA scanner); None: `has_bare_line_ending` counts."""

    def has_bare_line_ending(self) -> bool:
        known = self.bare_line_ending
        return has_bare_line_ending(self.raw) if known is None else known


class Action(enum.StrEnum):
    """What the pipeline did with an accepted message."""

    CODE_REQUESTED = "code_requested"
    SUBMITTED = "submitted"
    STATE_SENT = "state_sent"
    SEALED = "sealed"
    FORWARDED = "forwarded"
    """postmaster@: queued for the operator (`ingest/postmaster.py`, not this pipeline)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to an accepted message; adapters turn it into their reply."""

    action: Action
    reference: str | None = None
    duplicate: bool = False
    message: ParsedMessage | None = None
    """The message as the pipeline parsed it, for adapters that need more (IMAP stubs)."""


@dataclass
class Context:
    """What the stages learnt about a message, handed to the role's handler."""

    inbound: Inbound
    parsed: ParsedMessage
    verdict: SenderVerdict
    raw_sha256: str
    """SHA-256 of the raw message (hex), computed once for every stage."""
    registered: bool = False
    """Whether the sender holds an active registration (read for mail without a credential);
    each handler reads the one registration its message is about."""

    @property
    def throttle_keys(self) -> list[str]:
        return [f"addr:{self.verdict.from_address.key}", f"ip:{self.inbound.peer_ip}"]

    def auth_results(self) -> dict[str, Any]:
        results: dict[str, Any] = {"channel": self.inbound.channel.value, **self.verdict.as_dict()}
        results["tls"] = self.inbound.tls
        return results


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """A message whose rows wait for their group commit: the handler's thread is free again.

    The pipeline awaits `committed` on the event loop, so a message waiting
    for its batch holds no worker thread.  When the commit fails, `settle`
    runs in a worker thread with the error: it undoes what the handler did
    outside the database (its blob files) and returns the outcome after all
    (the same message committed meanwhile: a duplicate) or raises.
    """

    committed: Future[Outcome]
    settle: Callable[[Exception], Outcome]


class RoleHandler(Protocol):
    def __call__(self, ctx: Context) -> Outcome | PendingCommit: ...


@runtime_checkable
class ReadsFirst(RoleHandler, Protocol):
    """A role handler whose reads join the pipeline's, in its one read transaction.

    `read` runs in the transaction that read whether the sender is registered (a
    `Reads`, no ORM session) and returns the rest of the handler's
    work, which runs once that transaction has ended: one read transaction
    per message rather than two.  Called directly, the handler reads in a
    transaction of its own.
    """

    def read(self, reads: Reads, ctx: Context) -> Callable[[], Outcome | PendingCommit]: ...


def read_alone(db: Database, read: Callable[[Reads, Context], Callable[[], R]], ctx: Context) -> R:
    """A `ReadsFirst` handler called on its own: its reads in a transaction of their own."""
    with db.read_connection() as reads:
        rest = read(reads, ctx)
    return rest()


class Pipeline:
    """Orders the stages; knows no protocol."""

    def __init__(
        self,
        *,
        db: Database,
        authenticator: SenderAuthenticator,
        limits: MimeLimits,
        max_message_bytes: int,
        id_domain: str,
        clock: Clock,
        handlers: dict[Role, RoleHandler],
        observe: Observe = no_observe,
        large_message_bytes: int = 4 * 1024 * 1024,
        threads: int = 32,
        credential_authenticator: SenderAuthenticator | None = None,
    ) -> None:
        self.db = db
        self.authenticator = authenticator
        # Messages that came with an AUTH credential (teletransmission): AUTH is what
        # authenticates them, so DKIM is checked and recorded but never required.
        self.credential_authenticator = credential_authenticator or authenticator
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self.id_domain = id_domain
        self.clock = clock
        self.handlers = handlers
        self._readers = {
            role: handler for role, handler in handlers.items() if isinstance(handler, ReadsFirst)
        }
        self.observe = observe
        # Checking a large message costs a few times its size in memory (the MIME parse
        # about 2x, encryption about 1x): large messages are checked one at a time.
        self.large_message_bytes = large_message_bytes
        # One gate per event loop: `imap pull --once` runs an event loop per mailbox, and
        # an asyncio.Semaphore that made a task wait is bound to that task's loop.
        self._large_gates: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Semaphore
        ] = weakref.WeakKeyDictionary()
        # The blocking stages run in threads of their own pool, a message's from its parse
        # to its queued commit (the wait for the commit is on the event loop).  More
        # threads than the sessions that send at once, so no message waits for one: with
        # 2 threads for 20 sessions the context switches halved, the CPU did not move.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest")

    async def ingest(self, inbound: Inbound) -> Outcome:
        try:
            if len(inbound.raw) < self.large_message_bytes:
                return await self._ingest(inbound)
            async with self._large_gate():
                return await self._ingest(inbound)
        except MessageRefused as exc:
            await self._in_thread(self._audit_refusal, inbound, exc)
            raise

    def close(self) -> None:
        """Wait for the messages in the worker threads, then stop the threads."""
        self._threads.shutdown(wait=True)

    def _large_gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._large_gates.get(loop)
        if gate is None:
            gate = self._large_gates[loop] = asyncio.Semaphore(1)
        return gate

    async def _ingest(self, inbound: Inbound) -> Outcome:
        if inbound.recipient.role not in self.handlers:
            # postmaster@ has its own desk on SMTP (ingest/postmaster.py), none here (IMAP).
            raise UnknownRecipient("no such user here")
        if len(inbound.raw) > self.max_message_bytes:
            raise MessageTooLarge("message exceeds fixed maximum message size")
        if inbound.has_bare_line_ending():
            raise BareLineEnding("bare CR or LF in message data")
        parsed, handled = await self._in_thread(self._check_and_handle, inbound)
        outcome = await self._settled(handled) if isinstance(handled, PendingCommit) else handled
        return dataclasses.replace(outcome, message=parsed)

    async def _settled(self, pending: PendingCommit) -> Outcome:
        """The outcome once the message's batch is committed (or failed and was undone)."""
        started = time.perf_counter()
        try:
            # Shielded: a session that ends while its message waits cancels only this
            # wait; the unit is still committed or failed, and undone if it failed.
            return await asyncio.shield(asyncio.wrap_future(pending.committed))
        except asyncio.CancelledError:
            pending.committed.add_done_callback(functools.partial(self._settle_unwaited, pending))
            raise
        except Exception as exc:
            return await self._in_thread(pending.settle, exc)
        finally:
            self.observe("commit", time.perf_counter() - started)

    def _settle_unwaited(self, pending: PendingCommit, committed: Future[Outcome]) -> None:
        """Undo a failed commit nobody waits for any more (runs in the writer thread)."""
        error = committed.exception()
        if error is None:
            return
        settle = functools.partial(_settle_quietly, pending, error)
        try:
            self._threads.submit(settle)
        except RuntimeError:  # the pool is shut down (the gateway is stopping): do it here
            settle()

    def _check_and_handle(self, inbound: Inbound) -> tuple[ParsedMessage, Outcome | PendingCommit]:
        """Every blocking stage in one worker thread: one hand-over per message, not three."""
        raw_sha256 = hashlib.sha256(inbound.raw).digest()
        with timed(self.observe, "parse"):
            parsed = self._parse(inbound.raw, raw_sha256)
        authenticator = (
            self.authenticator if inbound.credential_id is None else self.credential_authenticator
        )
        with timed(self.observe, "dkim"):
            verdict = authenticator.authenticate(inbound.raw)
        ctx = Context(inbound, parsed, verdict, raw_sha256.hex())
        return parsed, self._handle(ctx, inbound.recipient.role)

    async def _in_thread(self, func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await loop.run_in_executor(self._threads, call)

    def _parse(self, raw: bytes, raw_sha256: bytes) -> ParsedMessage:
        # A message without Message-ID gets one derived from its bytes, so that the
        # same bytes sent again (a lost 250, an IMAP pass after a crash) dedupe.
        digest = raw_sha256[:16]
        return parse_message(
            raw,
            self.limits,
            id_domain=self.id_domain,
            new_uuid=lambda: uuid.UUID(bytes=digest, version=4),
        )

    def _handle(self, ctx: Context, role: Role) -> Outcome | PendingCommit:
        """Whether the sender is registered, then the role's handler (its reads in the same
        read)."""
        reader, rest = self._readers.get(role), None
        with self.db.read_connection() as reads:
            if ctx.inbound.credential_address_key is None:
                ctx.registered = sender_registered(reads, ctx.verdict.from_address.key)
            self._check_sender(ctx)
            if reader is not None:
                rest = reader.read(reads, ctx)
        return self.handlers[role](ctx) if rest is None else rest()

    @staticmethod
    def _check_sender(ctx: Context) -> None:
        if ctx.inbound.credential_address_key is not None:
            if ctx.inbound.credential_address_key != ctx.verdict.from_address.key:
                raise SenderNotAuthenticated("From: is not the authenticated address")
        elif not ctx.registered:
            raise SenderNotRegistered("sender is not a registered address")

    def _audit_refusal(self, inbound: Inbound, exc: MessageRefused) -> None:
        try:
            with self.db.transaction() as session:
                append_event(
                    session,
                    self.clock(),
                    "message.refused",
                    actor=f"{inbound.channel.value}:{inbound.peer_ip}",
                    subject=inbound.recipient.role.value,
                    data=refusal_audit_data(exc),
                )
        except Exception:  # the refusal stands even if its audit line cannot be written
            log.exception("could not audit a refusal")


def refusal_audit_data(exc: MessageRefused) -> dict[str, Any]:
    """What the audit keeps of a refusal: never a sender's filename (DocumentRefused names one)."""
    data: dict[str, Any] = {"reason": type(exc).__name__}
    if not isinstance(exc, DocumentRefused):
        data["detail"] = exc.message
    return data


def _settle_quietly(pending: PendingCommit, error: BaseException) -> None:
    if not isinstance(error, Exception):
        return
    try:
        pending.settle(error)
    except Exception:  # the refusal or the commit error: nobody is there to be told
        log.debug("a failed commit nobody waited for was undone", exc_info=True)
