"""aiosmtpd's protocol plus the gateway's connection limits, session bounds and DATA reader."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AnyStr, ClassVar

from aiosmtpd.smtp import MISSING, syntax

from gateway.adapters import aiosmtpd as adapter
from gateway.adapters.asyncio_streams import buffered_bytes, discard_buffered, raised_limit
from gateway.escaping import escape
from gateway.smtp import replies
from gateway.smtp.data import DataScanner, DataState
from gateway.smtp.limits import ClientTracker, SessionBounds

log = logging.getLogger("gateway.smtp")
DATA_PIECE_BYTES = 1 << 20
"""The StreamReader limit while reading DATA: the largest piece read at once."""
IDENT = "ESMTP"
"""The greeting is `220 <hostname> ESMTP`: no software name or version for scanners."""
REPLY_MAX = 512
"""Replies are cut here (RFC 5321 4.5.3.1.5); aiosmtpd echoes some of what clients send."""

_DATA_REFUSALS = {
    DataState.TOO_LONG: replies.R500_LINE_TOO_LONG,
    DataState.TOO_MUCH: replies.R552_TOO_BIG,
}


class GatewaySMTP(adapter.HookedSMTP):
    """One SMTP session: aiosmtpd's protocol, the shared connection limits, our DATA reader.

    `sessions` is the listener's set of live sessions (for a graceful stop);
    `tracker` is shared by every listener of the gateway; `bounds` limit the
    session as a whole (commands, lifetime, DATA rate).  AUTH is neither
    advertised (EHLO, HELP) nor accepted: only the submission port's session
    (`gateway.smtp.auth.SubmissionSMTP`, built for a spec with an
    authenticator) sets `offers_auth`.  Every way the gateway ends a session
    goes through `close_with`, which answers first.
    """

    offers_auth: ClassVar[bool] = False

    def __init__(
        self,
        handler: Any,
        *,
        tracker: ClientTracker,
        sessions: set[GatewaySMTP],
        data_timeout: float,
        bounds: SessionBounds | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("ident", IDENT)
        super().__init__(handler, **kwargs)
        adapter.escape_library_log()
        self._tracker = tracker
        self._sessions = sessions
        self._data_timeout = data_timeout
        self._bounds = bounds or SessionBounds()
        self._peer_ip: str | None = None
        self._refused = False
        self._commands = 0
        self._closing = False
        self._checking = False
        """Between the end of DATA and its reply: a close waits for the reply."""
        self._close_after: tuple[str, str] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the end of DATA: a graceful stop waits for it."""
        return self.envelope is not None and self.envelope.mail_from is not None

    @property
    def starttls_offered(self) -> bool:
        """A certificate is configured and TLS has not started yet (EHLO and HELP agree)."""
        return bool(self.tls_context) and not adapter.tls_started(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else "?"
        if self._peer_ip is None:  # STARTTLS calls connection_made again on the same session
            if not self._tracker.open(ip):
                log.info("smtp connection refused", extra={"peer": ip, "reply": "421"})
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(replies.R421_TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                self._refused = True  # aiosmtpd never saw this connection: nothing to tear down
                return
            self._peer_ip = ip
            self._sessions.add(self)
            if self._bounds.max_session_time:
                self._timers["lifetime"] = self.loop.call_later(
                    self._bounds.max_session_time,
                    self.close_with,
                    replies.R421_SESSION_TIME,
                    "session time limit",
                )
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        for timer in self._timers.values():
            timer.cancel()
        if self._peer_ip is not None:
            self._tracker.close(self._peer_ip)
            self._sessions.discard(self)
            self._peer_ip = None
        super().connection_lost(error)

    # -- ending a session ---------------------------------------------------------
    def close_with(self, reply: str, reason: str) -> None:
        """Answer `reply` and close the session; after the reply in progress, if any."""
        if self._checking:
            self._close_after = self._close_after or (reply, reason)
            return
        self._close_now(reply, reason)

    def _close_now(self, reply: str, reason: str) -> None:
        transport = self.transport
        if self._closing or transport is None or transport.is_closing():
            return
        self._closing = True
        log.info(
            "smtp session closed",
            extra={
                "peer": self._peer_ip,
                "reason": reason,
                "reply": reply[:9],
                "commands": self._commands,
            },
        )
        discard_buffered(adapter.reader(self))  # nothing the client sent after this may act
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(reply.encode("ascii") + b"\r\n")
        transport.close()

    def close_for_shutdown(self) -> None:
        self._close_now(replies.R421_SHUTTING_DOWN, "shutdown")

    def inactivity_timeout(self) -> None:
        # RFC 5321 4.5.3.2: a server that times out should say so with a 421.
        self.close_with(replies.R421_IDLE, "idle timeout")

    async def command_allowed(self, verb: str) -> bool:
        """Every command counts, whatever its verb: the session's bound, not a verb's."""
        if self._closing:
            return False  # bytes already read when we closed: never acted on
        self._commands += 1
        limit = self._bounds.max_commands
        if limit is not None and self._commands > limit:
            self.close_with(replies.R421_TOO_MANY_COMMANDS, "too many commands")
            return False
        return True

    # -- replies and commands -----------------------------------------------------
    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            # aiosmtpd answers an oversized MAIL SIZE= itself, without an enhanced code.
            if status.startswith(adapter.OWN_OVERSIZE_REPLY_PREFIX):
                status = replies.R552_TOO_BIG
            # aiosmtpd advertises AUTH after STARTTLS on any port; here only where offered.
            if not self.offers_auth and status.startswith(adapter.OWN_AUTH_ADVERTISEMENT_PREFIX):
                return
            # aiosmtpd echoes the client's verb or argument in some replies: never raw.
            await super().push(escape(status, REPLY_MAX))
            return
        await super().push(status)

    @syntax("STARTTLS", when="starttls_offered")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if adapter.tls_started(self):  # aiosmtpd would answer 220 and layer a second TLS
            await self.push(replies.R503_TLS_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("AUTH <mechanism>", when="offers_auth")
    async def smtp_AUTH(self, arg: str) -> None:
        if not self.offers_auth:
            await self.push(replies.R502_NO_AUTH)
            return
        await super().smtp_AUTH(arg)

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

        Bytes already waiting before any reply to DATA were sent without
        waiting for it: PIPELINING is not offered, and if DATA failed they
        would be read as commands (Postfix's reject_unauth_pipelining).
        """
        if buffered_bytes(adapter.reader(self)):
            self.close_with(replies.R554_EARLY_DATA, "data before 354")
            return
        adapter.reset_timeout(self, self._data_timeout)
        await self._data_command(arg)
        if not self._closing:
            # DATA's longer timer (the message at the minimum rate) ends with its
            # reply: a client that then says nothing is idle from here.
            adapter.reset_timeout(self)

    async def _data_command(self, arg: str) -> None:
        if adapter.handles_data_itself(self):
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
        scanner = await self._read_data()
        content, state = scanner.result()
        if state is not DataState.NOMINAL:
            await self.push(_DATA_REFUSALS[state])
            adapter.reset_after_data(self)
            return
        self.envelope.content = content
        self.envelope.original_content = content
        if isinstance(self.envelope, adapter.GatewayEnvelope):
            self.envelope.bare_line_ending = scanner.bare_line_ending
        status = await self._checked()
        adapter.reset_after_data(self)
        await self.push("250 OK" if status is MISSING else status)

    async def _checked(self) -> Any:
        """The DATA hook's reply; a close asked for meanwhile comes right after that reply."""
        self._checking = True
        try:
            return await adapter.call_handler_hook(self, "DATA")
        finally:
            self._checking = False
            if self._close_after is not None:
                # Runs once this task yields: after the reply is written.
                self.loop.call_soon(self._close_now, *self._close_after)

    async def _read_data(self) -> DataScanner:
        """Read up to the lone dot in large pieces; the scanner holds the message or the limit.

        The scanner applies aiosmtpd's limits and unstuffing to the pieces.
        """
        reader = adapter.reader(self)
        scanner = DataScanner(self.data_size_limit, self.line_length_limit)
        self._watch_rate(self.loop.time(), scanner, reader)
        ended = False
        try:
            with raised_limit(reader, DATA_PIECE_BYTES):
                while not ended and self.transport is not None:
                    ended = scanner.feed(await self._read_piece(reader))
            if not ended:  # the connection went away: never hand a cut message on
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            log.info("smtp connection lost during DATA", extra={"peer": self._peer_ip})
            adapter.writer(self).close()
            raise
        finally:
            rate = self._timers.pop("data_rate", None)
            if rate is not None:
                rate.cancel()
        return scanner

    def _watch_rate(
        self, started: float, scanner: DataScanner, reader: asyncio.StreamReader
    ) -> None:
        """Close with 421 4.4.2 once DATA brings less than `min_data_rate` bytes a second.

        Checked at the moment the bytes received so far stop being enough,
        so a fast client costs one timer per `received / min_data_rate` seconds.
        """
        received = scanner.received + buffered_bytes(reader)
        deadline = self._bounds.data_deadline(started, received)
        if deadline is None:
            return
        if self.loop.time() >= deadline:
            self.close_with(replies.R421_TOO_SLOW, "data rate")
            return
        self._timers["data_rate"] = self.loop.call_at(
            deadline, self._watch_rate, started, scanner, reader
        )

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
