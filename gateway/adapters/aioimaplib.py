"""aioimaplib's internals used by the IMAP adapter, and nothing else of them.

What aioimaplib lacks, built on its private parts: a protocol that tells a
lost session at once (`_handle_line`) and reads without formatting every
chunk for a debug line nobody logs (`data_received`), a client that
connects to the address we checked while verifying TLS against the host
name (`create_client`, `_client_task`), STARTTLS (swapping the protocol's
transport), and AUTHENTICATE with an initial response (a `Command` subclass
answering continuations, `pending_sync_command`, `state`, `_reset_timer`).
When aioimaplib changes, re-read `IMAP4ClientProtocol._handle_line`,
`IMAP4ClientProtocol.data_received`, `IMAP4.create_client`,
`IMAP4ClientProtocol.execute` and `Command` in aioimaplib/aioimaplib.py
against this module.

Why SASL here: aioimaplib's own `xoauth2()` hangs on the server's error
challenge (it never answers the `+` line, so a refused token waits for the
command's timeout instead of ending in NO), and its debug log would show
the base64 of the token, since it scrubs only the token's plain text.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aioimaplib

LIBRARY = "aioimaplib"
WRITTEN_AGAINST = "2.0.3"
TIMEOUT = 60.0


class EndingProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, telling when the server ends the session.

    `lost` is set when the connection goes away, or when the server says
    `* BYE` outside LOGOUT (Exchange Online sends "BYE Session invalidated -
    AccessTokenExpired" in the middle of a command, and may then answer
    further commands with BAD rather than close: reported in aioimaplib's
    issue 83 and imapsync's issue 250).  aioimaplib ignores both: a command
    in flight would wait for its timeout.
    """

    incomplete_line: bytes  # set by aioimaplib's __init__, read by `data_received`
    current_command: Any

    def __init__(self, loop: Any) -> None:
        self.lost = asyncio.Event()
        super().__init__(loop, lambda _exc: self.lost.set())

    def _handle_line(self, line: bytes, current_cmd: Any) -> Any:
        if line.startswith(b"* BYE") and not self._logging_out():
            self.lost.set()
            if self.transport is not None:
                self.transport.close()  # the session is over whatever comes next
        return super()._handle_line(line, current_cmd)

    def data_received(self, data: bytes) -> None:
        """aioimaplib's, without its `log.debug('Received : %s' % d)`.

        That line builds the repr of every chunk read, logged or not: 5.5 % of
        the interpreter's time pulling 100 KB messages (a FETCH of 8 bodies
        arrives as a dozen chunks of 64 KiB).
        """
        try:
            self._handle_responses(
                self.incomplete_line + data, self._handle_line, self.current_command
            )
            self.incomplete_line = b""
            self.current_command = None
        except aioimaplib.IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data

    def _logging_out(self) -> bool:
        """A BYE is the normal answer to LOGOUT (and a greeting BYE is the hello's failure)."""
        pending = self.pending_sync_command
        return self.state in (aioimaplib.CONNECTED, aioimaplib.LOGOUT) or (
            pending is not None and pending.name == "LOGOUT"
        )


class PinnedImap(aioimaplib.IMAP4):  # type: ignore[misc]
    """IMAP4 that connects to a given address and checks TLS against the host name."""

    def __init__(
        self,
        address: str,
        port: int,
        server_hostname: str,
        tls: ssl.SSLContext | None,
        *,
        timeout: float = TIMEOUT,
    ) -> None:
        self._server_hostname = server_hostname
        super().__init__(host=address, port=port, timeout=timeout, ssl_context=tls)
        self.lost: asyncio.Event = self.protocol.lost

    def create_client(
        self, host: str, port: int, loop: Any, conn_lost_cb: Any = None, ssl_context: Any = None
    ) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = EndingProtocol(local_loop)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(
                lambda: self.protocol,
                host,
                port,
                ssl=ssl_context,
                server_hostname=self._server_hostname if ssl_context else None,
            )
        )



async def starttls(imap: Any, context: ssl.SSLContext, host: str, *, timeout: float) -> bool:
    """STARTTLS on a connected session; False when not offered or refused."""
    protocol = imap.protocol
    if "STARTTLS" not in protocol.capabilities:
        return False
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    response = await asyncio.wait_for(protocol.execute(command), timeout)
    if response.result != "OK":
        return False
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(
        protocol.transport, protocol, context, server_hostname=host
    )
    await protocol.capability()  # capabilities before TLS must be forgotten (RFC 3501 6.2.1)
    return True




class _SaslCommand(aioimaplib.Command):  # type: ignore[misc]
    """AUTHENTICATE <mechanism> [initial response]; answers continuations itself.

    The first `+` gets the initial response when it was not sent inline (no
    SASL-IR); any later `+` is the server's error challenge, answered with
    `abort` so the server completes the command with NO.
    """

    def __init__(
        self, tag: str, mechanism: str, response: str, abort: str, inline: bool, protocol: Any
    ) -> None:
        super().__init__("AUTHENTICATE", tag, loop=protocol.loop, timeout=TIMEOUT)
        self.mechanism = mechanism
        self._wire = f"{tag} AUTHENTICATE {mechanism}" + (f" {response}" if inline else "")
        self._pending: str | None = None if inline else response
        self._abort = abort
        self._protocol = protocol
        self.challenged = False
        """Whether the server sent an error challenge (it refused the credentials)."""

    def __repr__(self) -> str:  # aioimaplib logs pending commands with %s
        return f"{self.tag} AUTHENTICATE {self.mechanism} [secret]"

    def wire(self) -> bytes:
        return self._wire.encode("ascii") + b"\r\n"

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        if result == "Pending" and isinstance(line, bytes) and line.startswith(b"+"):
            if self._pending is None:
                self.challenged = True
                reply = self._abort
            else:
                reply = self._pending
            self._pending = None
            self._protocol.transport.write(reply.encode("ascii") + b"\r\n")
            self._reset_timer()
            return
        super().append_to_resp(line, result)


async def sasl_authenticate(imap: Any, mechanism: str, response: str, abort: str) -> bool:
    """Run one AUTHENTICATE exchange on a not-yet-authenticated session; True when accepted.

    Written to the transport directly rather than through aioimaplib's
    `execute`, which logs every command line it sends.
    """
    protocol = imap.protocol
    inline = "SASL-IR" in protocol.capabilities
    command = _SaslCommand(protocol.new_tag(), mechanism, response, abort, inline, protocol)
    protocol.pending_sync_command = command
    try:
        protocol.transport.write(command.wire())
        await asyncio.wait_for(command.wait(), TIMEOUT)
    finally:
        if protocol.pending_sync_command is command:  # timed out or cancelled
            protocol.pending_sync_command = None
    if command.response.result != "OK":
        return False
    protocol.state = aioimaplib.AUTH
    return True
