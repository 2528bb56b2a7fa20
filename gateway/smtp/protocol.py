"""aiosmtpd's protocol plus the gateway's connection limits and DATA read in large pieces."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AnyStr, ClassVar

from aiosmtpd.smtp import MISSING, SMTP, syntax

from gateway.adapters import aiosmtpd as adapter
from gateway.adapters.asyncio_streams import raised_limit
from gateway.smtp import replies
from gateway.smtp.data import DataScanner, DataState
from gateway.smtp.limits import ClientTracker

log = logging.getLogger("gateway.smtp")
DATA_PIECE_BYTES = 1 << 20
"""The StreamReader limit while reading DATA: the largest piece read at once."""

_DATA_REFUSALS = {
    DataState.TOO_LONG: replies.R500_LINE_TOO_LONG,
    DataState.TOO_MUCH: replies.R552_TOO_BIG,
}


class GatewaySMTP(SMTP):
    """One SMTP session: aiosmtpd's protocol, the shared connection limits, our DATA reader.

    `sessions` is the listener's set of live sessions (for a graceful stop);
    `tracker` is shared by every listener of the gateway.  AUTH is neither
    advertised nor accepted: only the submission port's session
    (`gateway.smtp.auth.SubmissionSMTP`, built for a spec with an
    authenticator) sets `offers_auth`.
    """

    offers_auth: ClassVar[bool] = False

    def __init__(
        self,
        handler: Any,
        *,
        tracker: ClientTracker,
        sessions: set[GatewaySMTP],
        data_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._tracker = tracker
        self._sessions = sessions
        self._data_timeout = data_timeout
        self._peer_ip: str | None = None
        self._refused = False

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the end of DATA: a graceful stop waits for it."""
        return self.envelope is not None and self.envelope.mail_from is not None

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
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._peer_ip is not None:
            self._tracker.close(self._peer_ip)
            self._sessions.discard(self)
            self._peer_ip = None
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd answers an oversized MAIL SIZE= itself, without an enhanced code.
        if isinstance(status, str) and status.startswith(adapter.OWN_OVERSIZE_REPLY_PREFIX):
            await super().push(replies.R552_TOO_BIG)
            return
        # aiosmtpd advertises AUTH after STARTTLS on any port; here only where it is offered.
        if (
            not self.offers_auth
            and isinstance(status, str)
            and status.startswith(adapter.OWN_AUTH_ADVERTISEMENT_PREFIX)
        ):
            return
        await super().push(status)

    @syntax("AUTH <mechanism>")
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
        """
        adapter.reset_timeout(self, self._data_timeout)
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
        content, state = await self._read_data()
        if state is not DataState.NOMINAL:
            await self.push(_DATA_REFUSALS[state])
            adapter.reset_after_data(self)
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await adapter.call_handler_hook(self, "DATA")
        adapter.reset_after_data(self)
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[bytes, DataState]:
        """Read up to the lone dot in large pieces: the message, or the limit it met.

        The scanner applies aiosmtpd's limits and unstuffing to the pieces.
        """
        reader = adapter.reader(self)
        scanner = DataScanner(self.data_size_limit, self.line_length_limit)
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
