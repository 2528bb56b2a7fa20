"""postmaster@ (RFC 5321 4.5.1): accepted without sender authentication, forwarded to the operator.

What remote postmasters send (bounces, abuse and DMARC reports, "your
server is broken") is not signed by a registered guardian, so the checks of
the gateway's other addresses would refuse it all.  It is accepted within
tighter bounds instead: at most 1 MiB, a few messages per client IP an hour,
no bare CR or LF.  It is never parsed nor opened: the operator receives it
joined unchanged to a short notice from the gateway's own address, so nothing
its sender wrote becomes a header of the mail we send.  The notice goes
through the outbox, queued in the same transaction as its audit event.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from gateway.errors import (
    BareLineEnding,
    MessageRefused,
    MessageTooLarge,
    TemporaryFailure,
    Throttled,
)
from gateway.escaping import escape
from gateway.ingest.pipeline import Action, Inbound, Outcome
from gateway.model import Clock
from gateway.outbox.templates import format_size, format_utc
from gateway.storage.audit import append_event
from gateway.storage.db import Database
from gateway.storage.outbox import enqueue

log = logging.getLogger("gateway.postmaster")

MAX_BYTES = 1 << 20
PER_CLIENT = 10
WINDOW = 3600.0
"""PER_CLIENT messages per client IP per WINDOW seconds (one process's count)."""
KIND = "postmaster"

Wrap = Callable[..., bytes]
"""(template kind, operator address, message, **template values) -> the signed mail to queue."""


class PostmasterDesk:
    """Takes postmaster@ mail and queues it, wrapped, for `operator_address`."""

    def __init__(
        self,
        db: Database,
        wrap: Wrap,
        operator_address: str,
        clock: Clock,
        *,
        max_bytes: int = MAX_BYTES,
        per_client: int = PER_CLIENT,
        window: float = WINDOW,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.wrap = wrap
        self.operator_address = operator_address
        self.clock = clock
        self.max_bytes = max_bytes
        self.per_client = per_client
        self.window = window
        self._monotonic = monotonic
        self._recent: dict[str, deque[float]] = defaultdict(deque)

    async def forward(self, inbound: Inbound) -> Outcome:
        """Queue the message for the operator; raise the domain error that refuses it."""
        try:
            if len(inbound.raw) > self.max_bytes:
                raise MessageTooLarge("message to postmaster exceeds 1 MB")
            if inbound.has_bare_line_ending():
                raise BareLineEnding("bare CR or LF in message data")
        except MessageRefused as exc:
            await asyncio.to_thread(self._audit_refusal, inbound, exc)
            raise
        self._take_slot(inbound.peer_ip)
        outbox_id = await asyncio.to_thread(self._queue, inbound)
        log.info("postmaster message queued for the operator", extra={"outbox_id": outbox_id})
        return Outcome(Action.FORWARDED)

    def _take_slot(self, peer_ip: str) -> None:
        """Count this message against its client's hourly allowance (event loop only)."""
        now = self._monotonic()
        recent = self._recent[peer_ip]
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if len(recent) >= self.per_client:
            raise Throttled("too many messages to postmaster from this client, try again later")
        recent.append(now)

    def _queue(self, inbound: Inbound) -> int:
        raw = inbound.raw
        sha256 = hashlib.sha256(raw).hexdigest()
        try:
            mail = self.wrap(KIND, self.operator_address, raw, **self._values(inbound, sha256))
        except Exception:  # a broken template override, the DKIM key: ours, not the sender's
            log.exception("postmaster: the notice to the operator could not be composed")
            raise TemporaryFailure("temporary internal error, try again later") from None
        now = self.clock()
        with self.db.transaction() as session:
            outbox_id = enqueue(
                session, kind=KIND, recipient=self.operator_address, now=now, message=mail
            )
            append_event(
                session,
                now,
                "postmaster.forwarded",
                actor=_actor(inbound),
                subject=KIND,
                data={"size": len(raw), "sha256": sha256, "outbox_id": outbox_id},
            )
        return outbox_id

    @staticmethod
    def _values(inbound: Inbound, sha256: str) -> dict[str, str]:
        tls = inbound.tls
        return {
            "received_at": format_utc(inbound.received_at),
            "peer_ip": escape(inbound.peer_ip, 64),
            "mail_from": escape(inbound.mail_from, 256) or "<> (adresse vide)",
            "tls": f"{tls['version']} {tls['cipher']}" if tls else "aucun (en clair)",
            "size": format_size(len(inbound.raw)),
            "sha256": sha256,
        }

    def _audit_refusal(self, inbound: Inbound, exc: MessageRefused) -> None:
        data: dict[str, Any] = {"reason": type(exc).__name__, "detail": exc.message}
        try:
            with self.db.transaction() as session:
                append_event(
                    session,
                    self.clock(),
                    "message.refused",
                    actor=_actor(inbound),
                    subject=KIND,
                    data=data,
                )
        except Exception:  # the refusal stands even if its audit line cannot be written
            log.exception("could not audit a refusal")


def _actor(inbound: Inbound) -> str:
    return f"{inbound.channel.value}:{inbound.peer_ip}"
