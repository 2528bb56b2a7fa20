"""aiosmtpd hooks: recipient policy at MAIL and RCPT, the pipeline at DATA, one log line each."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from gateway.errors import (
    GatewayError,
    MessageRefused,
    TemporaryFailure,
    Throttled,
    UnknownRecipient,
)
from gateway.escaping import escape
from gateway.ingest.pipeline import Action, Inbound, Outcome, Pipeline
from gateway.ingest.postmaster import PostmasterDesk
from gateway.ingest.recipients import Recipient, RecipientPolicy, Role
from gateway.logs import correlation, current_correlation_id
from gateway.model import Channel, Clock
from gateway.smtp import replies
from gateway.smtp.auth import authenticated_identity, sender_refusal
from gateway.smtp.limits import ClientTracker

log = logging.getLogger("gateway.smtp")


def _ignore_outcome(outcome: Outcome) -> None:
    """The default `on_accepted`: nobody waits for accepted messages."""


def _ignore_count(outcome: str) -> None:
    """The default `count_message`: no metrics."""


class GatewayHandler:
    """One listener's hooks: which channel it is, what it accepts, whom it tells.

    `on_accepted` is told of every accepted message (the outbox wakes up to
    send its receipt); `count_message` of every DATA's outcome (metrics).
    `postmaster` takes postmaster@ mail, which skips the pipeline's checks.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RecipientPolicy,
        tracker: ClientTracker,
        clock: Clock,
        *,
        channel: Channel = Channel.SMTP,
        on_accepted: Callable[[Outcome], None] = _ignore_outcome,
        count_message: Callable[[str], None] = _ignore_count,
        postmaster: PostmasterDesk | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.tracker = tracker
        self.max_recipients = tracker.limits.max_recipients
        self.clock = clock
        self.channel = channel
        self.on_accepted = on_accepted
        self.count_message = count_message
        self.postmaster = postmaster
        self.in_flight = 0
        self.accepting = True

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO lines, without AUTH on a listener that offers none (the inbound port).

        aiosmtpd offers AUTH as soon as TLS is up, whether or not anything
        could authenticate; `GatewaySMTP.offers_auth` says whether this one can.
        """
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if getattr(server, "offers_auth", False):
            return responses
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.accepting:
            return replies.R421_SHUTTING_DOWN
        if not self.tracker.message_allowed(peer_ip(session)):
            return replies.R450_TOO_MANY_MESSAGES
        refusal = sender_refusal(session, address)  # the submission port: only as oneself
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return replies.R250_SENDER_OK

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        try:
            recipient = self.policy.resolve(address)
        except UnknownRecipient:
            log.info(
                "smtp recipient refused",
                extra={
                    "peer": peer_ip(session),
                    "reply": "550 5.1.1",
                    "rcpt_domain": _domain(address),
                },
            )
            return replies.R550_UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return replies.R452_TOO_MANY_RECIPIENTS
        if envelope.rcpt_tos and self.policy.resolve(envelope.rcpt_tos[0]) != recipient:
            return replies.R452_ONE_ADDRESS  # the client sends the others in a new transaction
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return replies.R250_RECIPIENT_OK

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.in_flight += 1
        started = time.monotonic()
        recipient = self.policy.resolve(envelope.rcpt_tos[0])
        raw = bytes(envelope.original_content or b"")
        with correlation():  # the transaction's id: on each of its log lines and in a 451
            try:
                reply, outcome = await self._ingest(server, session, envelope, recipient, raw)
            finally:
                self.in_flight -= 1
            self.count_message(outcome)
            tls = tls_info(server, session)
            log.info(
                "smtp transaction",
                extra={
                    "peer": peer_ip(session),
                    "tls_version": tls["version"] if tls else None,
                    "tls_cipher": tls["cipher"] if tls else None,
                    "mail_from_domain": _domain(envelope.mail_from or ""),
                    "rcpt_role": recipient.role.value,
                    "recipients": len(envelope.rcpt_tos),
                    "size": len(raw),
                    "outcome": outcome,
                    # The code only: a reply's text may name a sender's document.
                    "reply": replies.reply_code(reply),
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        return reply

    async def _ingest(
        self, server: SMTP, session: Session, envelope: Envelope, recipient: Recipient, raw: bytes
    ) -> tuple[str, str]:
        """The reply to DATA and the outcome (accepted, duplicate, refused, tempfail, error)."""
        identity = authenticated_identity(session)
        inbound = Inbound(
            raw=raw,
            mail_from=envelope.mail_from or "",
            recipient=recipient,
            channel=self.channel,
            peer_ip=peer_ip(session),
            received_at=self.clock(),
            tls=tls_info(server, session),
            credential_id=identity.credential_id if identity else None,
            credential_address_key=identity.address_key if identity else None,
            bare_line_ending=getattr(envelope, "bare_line_ending", None),
        )
        try:
            if recipient.role is Role.POSTMASTER and self.postmaster is not None:
                outcome = await self.postmaster.forward(inbound)
            else:
                outcome = await self.pipeline.ingest(inbound)
        except GatewayError as exc:
            reply = replies.reply_for(exc)
            if isinstance(exc, TemporaryFailure) and not isinstance(exc, Throttled):
                # The operator's to see (database or DNS down, disk full, a key
                # expired), with the correlation id the reply carries, so that a
                # sender's bounce leads to this line; no traceback: the cause's
                # text may hold a statement's parameters.
                cause = exc.__cause__
                log.warning(
                    "smtp temporary failure: %s",
                    escape(str(exc)),
                    extra={"reason": type(exc).__name__,
                           "cause": type(cause).__name__ if cause is not None else None},
                )
                reply = replies.with_reference(reply, current_correlation_id())
            return reply, ("refused" if isinstance(exc, MessageRefused) else "tempfail")
        except Exception:
            log.exception("internal error in DATA")
            return replies.R451_INTERNAL.format(ref=current_correlation_id()), "error"
        self.on_accepted(outcome)
        if outcome.reference and outcome.action is Action.SUBMITTED:
            reply = replies.R250_ACCEPTED.format(reference=outcome.reference)
        else:
            reply = replies.R250_OK
        return reply, "duplicate" if outcome.duplicate else "accepted"

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers 500 with the exception text (paths!): never that.
        if isinstance(error, TLSSetupException):
            # The client's TLS is too old or broken: its problem, not an internal fault.
            log.info("smtp tls handshake failed", extra={"reason": escape(str(error.__cause__))})
            return replies.R421_TLS_FAILED
        with correlation() as ref:
            log.error("smtp session error", exc_info=error)
        return replies.R451_INTERNAL.format(ref=ref)


def peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def _domain(address: str) -> str:
    """The domain of a client's address, for a log line: escaped, never as typed."""
    return escape(address.rpartition("@")[2].strip("<>").lower(), 255)


def tls_info(server: SMTP, session: Session) -> dict[str, str] | None:
    """TLS version and cipher of the session: after STARTTLS, or implicit from the start."""
    extra: Any = session.ssl
    ssl_object = extra.get("ssl_object") if extra else None
    if ssl_object is None and server.transport is not None:
        ssl_object = server.transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return {"version": str(ssl_object.version()), "cipher": str(cipher[0]) if cipher else ""}
