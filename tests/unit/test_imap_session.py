"""Telling that the server ended an IMAP session: a BYE outside LOGOUT, fed to the real protocol."""

from __future__ import annotations

import asyncio

from gateway.adapters.aioimaplib import EndingProtocol


class Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        pass


async def test_imap_session_ended_by_bye_mid_command_is_noticed() -> None:
    """Exchange Online: "* BYE Session invalidated - AccessTokenExpired", then maybe BAD."""
    protocol = EndingProtocol(asyncio.get_running_loop())
    transport = Transport()
    protocol.connection_made(transport)
    protocol.state = "SELECTED"
    protocol.data_received(b"* BYE Session invalidated - AccessTokenExpired\r\n")
    assert protocol.lost.is_set() and transport.closed


async def test_imap_bye_answering_logout_is_not_a_lost_session() -> None:
    protocol = EndingProtocol(asyncio.get_running_loop())
    protocol.connection_made(Transport())
    protocol.state = "AUTH"
    logout = asyncio.ensure_future(protocol.logout())
    await asyncio.sleep(0)
    tag = protocol.pending_sync_command.tag
    protocol.data_received(b"* BYE Logging out\r\n" + f"{tag} OK Logout completed.\r\n".encode())
    assert (await logout).result == "OK"
    assert not protocol.lost.is_set()
