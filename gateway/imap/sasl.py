"""AUTHENTICATE over aioimaplib: one SASL exchange with an initial response, no secret logged.

aioimaplib's own `xoauth2()` cannot serve: it hangs on the server's error
challenge (it never answers the `+` line, so a refused token waits for the
command's timeout instead of ending in NO), and its debug log would show
the base64 of the token, since it scrubs only the token's plain text.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioimaplib

TIMEOUT = 60.0


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
