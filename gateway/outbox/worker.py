"""Delivers the outbox to the relay: claim due rows under a lease, send, record, retry, give up."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

import aiosmtplib
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gateway.audit.chain import append_event
from gateway.errors import TemporaryFailure
from gateway.model import Clock
from gateway.outbox.queue import FAILED, PENDING, SENT
from gateway.settings import RelaySection
from gateway.storage.db import Database
from gateway.storage.models import Outbox, OutboxAttempt

log = logging.getLogger("gateway.outbox")

FIRST_RETRY = timedelta(seconds=30)
DETAIL_MAX = 200
# Operations a relay answers with 5xx that say nothing about the message itself
# (bad relay credentials, refused greeting): the operator fixes them, we retry.
_NOT_ABOUT_THE_MESSAGE = (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPHeloError)


Compose = Callable[[str, str, dict[str, str]], bytes]
"""(kind, recipient, template values) -> the signed message."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A row taken under lease: what delivery needs, detached from its session."""

    id: int
    kind: str
    recipient: str
    message: bytes | None
    values: dict[str, str] | None
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str  # "sent" | "temporary" | "permanent"
    detail: str


def retry_delay(failures: int, max_backoff: timedelta) -> timedelta:
    """Wait before the next attempt after `failures` failed ones: 30 s, 1 min, 2 min … capped."""
    exponent = min(max(failures - 1, 0), 30)  # 2**30 * 30 s is far above any cap
    delay: timedelta = FIRST_RETRY * (1 << exponent)
    return min(max_backoff, delay)


def relay_tls_context() -> ssl.SSLContext:
    """Certificate-checking client context, TLS 1.2 or newer only."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def classify(error: Exception) -> Outcome:
    """Map a delivery error to an attempt result: 5xx about the message is permanent."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refused.code for refused in error.recipients]
        texts = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
        permanent = bool(codes) and all(500 <= code < 600 for code in codes)
        return Outcome("permanent" if permanent else "temporary", _short(texts))
    if isinstance(error, aiosmtplib.SMTPResponseException):
        detail = _short(f"{error.code} {error.message}")
        if 500 <= error.code < 600 and not isinstance(error, _NOT_ABOUT_THE_MESSAGE):
            return Outcome("permanent", detail)
        return Outcome("temporary", detail)
    if isinstance(error, aiosmtplib.SMTPException):
        return Outcome("temporary", _short(f"{type(error).__name__}: {error}"))
    # OSError, TimeoutError, ssl.SSLError: the relay is unreachable for now.
    return Outcome("temporary", _short(type(error).__name__))


def _short(text: str) -> str:
    return " ".join(text.split())[:DETAIL_MAX]


def envelope_sender(message: bytes) -> str:
    """The From address of a composed message, used as MAIL FROM (empty: null sender)."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(message)
    from_header = headers.get("From")
    addresses = getattr(from_header, "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


class OutboxWorker:
    """Sends due outbox rows; several workers (nodes) may share one database safely.

    Rows are claimed by setting `lease_until` in a short transaction (with
    `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's write lock serialises
    claims), so a row is never in two workers' hands while its lease runs.
    """

    def __init__(
        self,
        db: Database,
        relay: RelaySection,
        clock: Clock,
        *,
        batch: int = 20,
        lease: timedelta = timedelta(minutes=10),
        concurrency: int = 4,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        compose: Compose | None = None,
    ) -> None:
        self._db = db
        self._relay = relay
        self._clock = clock
        self._batch = batch
        self._lease = lease
        self._slots = asyncio.Semaphore(concurrency)
        self._tls_context = tls_context or relay_tls_context()
        self._local_hostname = local_hostname
        self._compose = compose
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run_once(self) -> int:
        """Claim and attempt one batch of due rows; return how many were attempted."""
        claimed = await asyncio.to_thread(self._claim)
        if claimed:
            await asyncio.gather(*(self._attempt(item) for item in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event, interval: float = 5.0) -> None:
        """Deliver until `stop` is set; the batch in flight is always finished first."""
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            attempted = 0
            try:
                attempted = await self.run_once()
            except TemporaryFailure:
                log.warning("outbox: database unavailable, will retry")
            except Exception:
                log.exception("outbox: unexpected error in a delivery pass")
            if attempted < self._batch:  # a full batch means more may be due right now
                await self._idle(stop, interval)

    def wake(self) -> None:
        """Ask the running loop to look at the outbox now (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._wake.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def _idle(self, stop: asyncio.Event, interval: float) -> None:
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        self._wake.clear()

    def _claim(self) -> list[Claimed]:
        now = self._clock()
        lease_until = now + self._lease
        with self._db.transaction() as session:
            rows = session.scalars(
                select(Outbox)
                .where(
                    Outbox.status == PENDING,
                    Outbox.next_attempt_at <= now,
                    or_(Outbox.lease_until.is_(None), Outbox.lease_until <= now),
                )
                .order_by(Outbox.next_attempt_at, Outbox.id)
                .limit(self._batch)
                .with_for_update(skip_locked=True)
            ).all()
            claimed = []
            for row in rows:
                if row.message is None and row.template_values is None:
                    continue  # cannot happen for a pending row; never send nothing
                row.lease_until = lease_until
                claimed.append(
                    Claimed(
                        row.id,
                        row.kind,
                        row.recipient,
                        row.message,
                        row.template_values,
                        lease_until,
                    )
                )
        return claimed

    async def _attempt(self, item: Claimed) -> None:
        async with self._slots:
            message = item.message
            if message is None:
                message = await asyncio.to_thread(self._compose_now, item)
            outcome = (
                await self._send(item, message)
                if message is not None
                else Outcome("temporary", "could not compose the message (see the log)")
            )
        now = self._clock()
        await asyncio.to_thread(self._record, item, outcome, now)

    def _compose_now(self, item: Claimed) -> bytes | None:
        if self._compose is None or item.values is None:
            log.error("outbox %s: template values but no composer", item.id)
            return None
        try:
            return self._compose(item.kind, item.recipient, item.values)
        except Exception:
            log.exception("outbox %s (%s): composing failed", item.id, item.kind)
            return None

    async def _send(self, item: Claimed, message: bytes) -> Outcome:
        relay = self._relay
        password = relay.password.get_secret_value()
        try:
            await aiosmtplib.send(
                message,
                sender=envelope_sender(message),
                recipients=[item.recipient],
                hostname=relay.host,
                port=relay.port,
                use_tls=relay.implicit_tls,
                start_tls=relay.starttls and not relay.implicit_tls,
                tls_context=self._tls_context,
                username=relay.username or None,
                password=password if relay.username else None,
                timeout=relay.timeout,
                local_hostname=self._local_hostname,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return classify(error)
        return Outcome("sent", "250 accepted by the relay")

    def _record(self, item: Claimed, outcome: Outcome, now: datetime) -> None:
        with self._db.transaction() as session:
            row = session.get(Outbox, item.id, with_for_update=True)
            if row is None or row.status != PENDING or row.lease_until != item.lease_until:
                # Our lease ran out and another worker took the row: its record wins.
                log.warning("outbox %s: lease lost, %s not recorded", item.id, outcome.result)
                return
            session.add(
                OutboxAttempt(
                    outbox_id=row.id, attempted_at=now, result=outcome.result, detail=outcome.detail
                )
            )
            row.attempts += 1
            row.lease_until = None
            self._apply(session, row, outcome, now)

    def _apply(self, session: Session, row: Outbox, outcome: Outcome, now: datetime) -> None:
        if outcome.result == "sent":
            # The message (or its values) may hold a code: keep neither once sent.
            row.status, row.sent_at, row.message, row.template_values = SENT, now, None, None
            log.info("outbox %s (%s): sent after %d attempt(s)", row.id, row.kind, row.attempts)
            return
        too_old = now - row.created_at >= self._relay.give_up_after
        if outcome.result == "permanent" or too_old:
            row.status, row.message, row.template_values = FAILED, None, None
            log.warning("outbox %s (%s): gave up: %s", row.id, row.kind, outcome.detail)
            append_event(
                session,
                now,
                "outbox.failed",
                actor="outbox",
                subject=row.related_reference or f"outbox/{row.id}",
                data={
                    "outbox_id": row.id,
                    "kind": row.kind,
                    "attempts": row.attempts,
                    "reason": "permanent refusal" if outcome.result == "permanent" else "expired",
                    "detail": outcome.detail,
                },
            )
            return
        row.next_attempt_at = now + retry_delay(row.attempts, self._relay.max_backoff)
        log.info(
            "outbox %s (%s): %s, retry at %s",
            row.id,
            row.kind,
            outcome.detail,
            row.next_attempt_at.isoformat(),
        )
