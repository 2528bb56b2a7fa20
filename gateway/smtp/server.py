"""aiosmtpd adapter: the listener, its limits, and the handler that calls the pipeline."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, TLSSetupException, syntax

from gateway.errors import GatewayError, MessageRefused, UnknownRecipient
from gateway.ingest.pipeline import Inbound, Outcome, Pipeline
from gateway.ingest.recipients import Recipient, RecipientPolicy
from gateway.model import Channel, Clock
from gateway.smtp import replies
from gateway.smtp.data import DataScanner

log = logging.getLogger("gateway.smtp")
DATA_PIECE_BYTES = 1 << 20
"""The StreamReader limit while reading DATA: the largest piece read at once."""


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    max_message_bytes: int
    max_recipients: int
    max_connections: int
    max_connections_per_client: int
    max_messages_per_client: int
    client_window: float
    max_commands: int
    idle_timeout: float
    min_data_rate: int

    @property
    def data_timeout(self) -> float:
        """DATA is one command for aiosmtpd's timer: the largest message at the minimum rate."""
        return self.idle_timeout + self.max_message_bytes / self.min_data_rate


def make_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class ClientTracker:
    """Connections and message counts per client IP, for the 421 and 450 limits."""

    def __init__(self, limits: SmtpLimits) -> None:
        self.limits = limits
        self.connections: dict[str, int] = defaultdict(int)
        self.total = 0
        self._messages: dict[str, deque[float]] = defaultdict(deque)

    def open(self, ip: str) -> bool:
        if (
            self.total >= self.limits.max_connections
            or self.connections[ip] >= self.limits.max_connections_per_client
        ):
            return False
        self.connections[ip] += 1
        self.total += 1
        return True

    def close(self, ip: str) -> None:
        self.connections[ip] -= 1
        self.total -= 1
        if self.connections[ip] <= 0:
            del self.connections[ip]

    def message_allowed(self, ip: str) -> bool:
        now = time.monotonic()
        window = self._messages[ip]
        while window and window[0] <= now - self.limits.client_window:
            window.popleft()
        if len(window) >= self.limits.max_messages_per_client:
            return False
        window.append(now)
        return True


class GatewaySMTP(SMTP):
    """aiosmtpd's protocol plus connection limits and a DATA-sized timeout."""

    def __init__(self, handler: GatewayHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._gateway = handler
        self._peer_ip: str | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if self._peer_ip is None:  # STARTTLS calls connection_made again on the same session
            if not self._gateway.tracker.open(ip):
                log.info("smtp connection refused", extra={"peer": ip, "reply": "421"})
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(replies.R421_TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                self._refused = True  # aiosmtpd never saw this connection: nothing to tear down
                return
            self._peer_ip = ip
            self._gateway.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._peer_ip is not None:
            self._gateway.tracker.close(self._peer_ip)
            self._gateway.sessions.discard(self)
            self._peer_ip = None
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd answers an oversized message itself, without an enhanced code.
        if isinstance(status, str) and status.startswith("552 Error:"):
            await super().push(replies.R552_TOO_BIG)
            return
        await super().push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, but read in large pieces into one buffer.

        aiosmtpd reads line by line (an await per line, the socket paused
        every 2 KB) and keeps every line as its own bytearray, joined at the
        end: costly in CPU, and nearly 4 times a 25 MB message per session in
        memory while several sessions upload at once. Here pieces go through
        `DataScanner` into a BytesIO, whose getvalue() hands its buffer over
        without a copy. Replies, limits, dot-unstuffing and bytes delivered
        are aiosmtpd 1.4's; configurations this adapter never uses are left
        to aiosmtpd.
        """
        self._reset_timeout(self._gateway.limits.data_timeout)
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, refusal = await self._read_data()
        if refusal is not None:
            await self.push(refusal)
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd, unannotated
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, str | None]:
        """Read up to the lone dot in large pieces; the message, or the reply refusing it.

        aiosmtpd's reader is limited to one line (1001 bytes) and pauses the
        socket at twice that: for the DATA phase the limit is raised (a
        private attribute of asyncio.StreamReader, restored afterwards) so
        that `readuntil` returns up to each `.<CRLF>` in one piece.  The
        scanner applies aiosmtpd's limits and unstuffing to the pieces.
        """
        reader = self._reader
        saved_limit = reader._limit  # type: ignore[attr-defined]  # asyncio private
        reader._limit = max(saved_limit, DATA_PIECE_BYTES)  # type: ignore[attr-defined]
        scanner = DataScanner(self.data_size_limit, self.line_length_limit)
        ended = False
        try:
            while not ended and self.transport is not None:
                ended = scanner.feed(await self._read_piece(reader))
            if not ended:  # the connection went away: never hand a cut message on
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            log.info("smtp connection lost during DATA", extra={"peer": self._peer_ip})
            self._writer.close()
            raise
        finally:
            reader._limit = saved_limit  # type: ignore[attr-defined]
        return scanner.result()

    @staticmethod
    async def _read_piece(reader: asyncio.StreamReader) -> bytes:
        """Up to the next `.<CRLF>`, or a large piece of a stretch without one.

        A piece never ends between a CR and its LF (the scanner counts lines
        within pieces): one more byte is read after a trailing CR.
        """
        try:
            return await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:
            piece = await reader.readexactly(exc.consumed)
        while piece.endswith(b"\r"):
            piece += await reader.readexactly(1)
        return piece

    def close_for_shutdown(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(replies.R421_SHUTTING_DOWN.encode() + b"\r\n")
            self.transport.close()


class GatewayHandler:
    """aiosmtpd hooks: recipient policy at RCPT, the pipeline at DATA."""

    def __init__(
        self,
        pipeline: Pipeline,
        policy: RecipientPolicy,
        limits: SmtpLimits,
        clock: Clock,
        channel: Channel = Channel.SMTP,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.limits = limits
        self.clock = clock
        self.channel = channel
        self.tracker = ClientTracker(limits)
        self.sessions: set[GatewaySMTP] = set()
        self.in_flight = 0
        self.accepting = True
        self.on_outcome: Callable[[Outcome], None] | None = None
        self.count_message: Callable[[str], None] = lambda outcome: None

    def busy(self) -> bool:
        """A DATA is being processed, or a session is between MAIL and the end of DATA."""
        return self.in_flight > 0 or any(
            s.envelope is not None and s.envelope.mail_from is not None for s in self.sessions
        )

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self.accepting:
            return replies.R421_SHUTTING_DOWN
        if not self.tracker.message_allowed(_peer_ip(session)):
            return replies.R450_TOO_MANY_MESSAGES
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
                    "peer": _peer_ip(session),
                    "reply": "550 5.1.1",
                    "rcpt_domain": _domain(address),
                },
            )
            return replies.R550_UNKNOWN_RECIPIENT
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
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
        try:
            reply = await self._ingest(session, envelope, recipient, raw)
        finally:
            self.in_flight -= 1
        log.info(
            "smtp transaction",
            extra={
                "peer": _peer_ip(session),
                "tls": _tls_info(session),
                "mail_from_domain": _domain(envelope.mail_from or ""),
                "rcpt_role": recipient.role.value,
                "recipients": len(envelope.rcpt_tos),
                "size": len(raw),
                "reply": reply,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return reply

    async def _ingest(
        self, session: Session, envelope: Envelope, recipient: Recipient, raw: bytes
    ) -> str:
        inbound = Inbound(
            raw=raw,
            mail_from=envelope.mail_from or "",
            recipient=recipient,
            channel=self.channel,
            peer_ip=_peer_ip(session),
            received_at=self.clock(),
            tls=_tls_info(session),
        )
        try:
            outcome = await self.pipeline.ingest(inbound)
        except GatewayError as exc:
            self.count_message("refused" if isinstance(exc, MessageRefused) else "tempfail")
            return replies.reply_for(exc)
        except Exception:
            ref = uuid.uuid4().hex[:12]
            log.exception("internal error in DATA", extra={"correlation_id": ref})
            self.count_message("error")
            return replies.R451_INTERNAL.format(ref=ref)
        self.count_message("duplicate" if outcome.duplicate else "accepted")
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        if outcome.reference and outcome.action == "submitted":
            return replies.R250_ACCEPTED.format(reference=outcome.reference)
        return replies.R250_OK

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers 500 with the exception text (paths!): never that.
        if isinstance(error, TLSSetupException):
            # The client's TLS is too old or broken: its problem, not an internal fault.
            log.info("smtp tls handshake failed", extra={"reason": str(error.__cause__)[:200]})
            return replies.R421_TLS_FAILED
        ref = uuid.uuid4().hex[:12]
        log.error("smtp session error", exc_info=error, extra={"correlation_id": ref})
        return replies.R451_INTERNAL.format(ref=ref)


def _peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip("<>").lower()[:255]


def _tls_info(session: Session) -> dict[str, str] | None:
    extra = session.ssl
    if not extra:
        return None
    ssl_object = extra.get("ssl_object")
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return {"version": str(ssl_object.version()), "cipher": str(cipher[0]) if cipher else ""}


class SmtpListener:
    """One listening socket and its sessions; stops gracefully."""

    def __init__(
        self,
        handler: GatewayHandler,
        *,
        hostname: str,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
    ) -> None:
        self.handler = handler
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.server: asyncio.Server | None = None

    def _protocol(self) -> GatewaySMTP:
        limits = self.handler.limits
        return GatewaySMTP(
            self.handler,
            data_size_limit=limits.max_message_bytes,
            hostname=self.hostname,
            tls_context=self.tls_context,
            require_starttls=self.require_starttls,
            timeout=limits.idle_timeout,
            command_call_limit=limits.max_commands,
            enable_SMTPUTF8=True,
            decode_data=False,
        )

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._protocol, host, port, reuse_port=reuse_port or None
        )
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self, grace: float) -> None:
        """Stop accepting, let transactions in flight finish (bounded), then close sessions."""
        self.handler.accepting = False
        if self.server is not None:
            self.server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.handler.busy() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.handler.busy():
            log.warning(
                "shutdown grace period over with transactions in flight",
                extra={"in_flight": self.handler.in_flight, "sessions": len(self.handler.sessions)},
            )
        for session in list(self.handler.sessions):
            session.close_for_shutdown()
