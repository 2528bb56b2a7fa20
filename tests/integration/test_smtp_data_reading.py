"""GatewaySMTP's own DATA reading answers and delivers exactly what aiosmtpd's does.

Each wire transcript is played against two listeners on loopback: GatewaySMTP,
and the same class reading DATA with aiosmtpd's code. Replies and the bytes
handed to the handler must be identical; a few are also checked outright.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.adapters import aiosmtpd as adapter
from gateway.smtp import replies
from gateway.smtp.data import DataState
from gateway.smtp.limits import ClientTracker, SmtpLimits
from gateway.smtp.protocol import GatewaySMTP

SIZE_LIMIT = 4000
LIMITS = SmtpLimits(
    max_message_bytes=SIZE_LIMIT,
    max_recipients=5,
    max_connections=20,
    max_connections_per_client=20,
    max_messages_per_client=1000,
    client_window=60.0,
    max_commands=100,
    idle_timeout=10.0,
    min_data_rate=1000,
)


class StubHandler:
    """What GatewaySMTP needs of GatewayHandler; records what DATA delivered."""

    def __init__(self) -> None:
        self.delivered: list[tuple[bytes, Any]] = []
        self.bare: list[bool | None] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.delivered.append((envelope.original_content, envelope.content))
        self.bare.append(getattr(envelope, "bare_line_ending", None))
        return "250 2.0.0 stub accepted"


class AiosmtpdDataSMTP(GatewaySMTP):
    """GatewaySMTP with aiosmtpd's own DATA reading: the behaviour to match."""

    async def smtp_DATA(self, arg: str) -> None:
        adapter.reset_timeout(self, LIMITS.data_timeout)
        await SMTP.smtp_DATA(self, arg)


OURS_FOR_AIOSMTPD = {
    b"500 Line too long (see RFC5321 4.5.3.1.6)\r\n": replies.R500_LINE_TOO_LONG.encode() + b"\r\n",
}
"""aiosmtpd's own English refusals (SMTP.smtp_DATA), and the replies we give in their place."""


async def _start(cls: type[GatewaySMTP], handler: StubHandler) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    tracker = ClientTracker(LIMITS)
    return await loop.create_server(
        lambda: cls(
            handler,
            tracker=tracker,
            sessions=set(),
            data_timeout=LIMITS.data_timeout,
            data_size_limit=SIZE_LIMIT,
            hostname="gw.test",
            timeout=10,
            enable_SMTPUTF8=True,
            decode_data=False,
        ),
        "127.0.0.1",
        0,
    )


async def _reply(reader: asyncio.StreamReader) -> bytes:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"".join(lines)


async def _play(port: int, data: bytes) -> list[bytes]:
    """A transaction sending `data` after DATA (terminator included), then a second one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = [await _reply(reader)]
    try:
        for command in (b"EHLO client.test", b"MAIL FROM:<a@exemple.fr>", b"RCPT TO:<d@gw.test>"):
            writer.write(command + b"\r\n")
            answers.append(await _reply(reader))
        writer.write(b"DATA\r\n")
        answers.append(await _reply(reader))
        writer.write(data)
        answers.append(await _reply(reader))
        # The session goes on: the next transaction is unaffected by the last one.
        for command in (b"MAIL FROM:<a@exemple.fr>", b"RCPT TO:<d@gw.test>", b"DATA"):
            writer.write(command + b"\r\n")
            answers.append(await _reply(reader))
        writer.write(b"second\r\n.\r\nQUIT\r\n")
        answers.append(await _reply(reader))
        answers.append(await _reply(reader))
    finally:
        writer.close()
    return answers


TRANSCRIPTS: dict[str, bytes] = {
    "plain": b"Subject: x\r\n\r\nBonjour\r\n.\r\n",
    "empty": b".\r\n",
    "dot-stuffed": b"..leading dot\r\n..\r\n...\r\n.x\r\n \r\n.\r\n",
    "bare LF and CR kept": b"a\nb\r\nc\rd\r\n\n.\n\r\n.\rx\r\n.\r\n",
    "smuggled end in one line": b"a\r\n\n.\n\r\nMAIL FROM:<x@y>\r\n.\r\n",
    "line at the limit": b"x" * 999 + b"\r\n.\r\n",
    "line one over": b"x" * 1000 + b"\r\n.\r\n",
    "line far over": b"y" * 3000 + b"\r\nafter\r\n.\r\n",
    "long line then dot": b"z" * 2500 + b".\r\n.\r\n",
    "too much": b"".join(b"%06d\r\n" % i for i in range(800)) + b".\r\n",
    "too much then long line": (b"w" * 900 + b"\r\n") * 5 + b"u" * 5000 + b"\r\n.\r\n",
    "long line then too much": b"u" * 5000 + b"\r\n" + b"t\r\n" * 3000 + b".\r\n",
    "dot-stuffed lines near the size limit": b"".join(
        [b"." + b"s" * 990 + b"\r\n\r\n", b"..\r\n", (b"r" * 997 + b"\r\n") * 3, b".\r\n"]
    ),
}


@pytest.mark.parametrize("name", list(TRANSCRIPTS))
async def test_smtp_data_reading_matches_aiosmtpd(name: str) -> None:
    ours, reference = StubHandler(), StubHandler()
    servers = [await _start(GatewaySMTP, ours), await _start(AiosmtpdDataSMTP, reference)]
    try:
        got, expected = [
            await _play(int(server.sockets[0].getsockname()[1]), TRANSCRIPTS[name])
            for server in servers
        ]
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
    # The one difference meant: our refusal of a long line says it in French first.
    expected = [OURS_FOR_AIOSMTPD.get(reply, reply) for reply in expected]
    assert got == expected
    assert ours.delivered == reference.delivered
    for original, content in ours.delivered:
        assert type(original) is bytes and content is original


async def test_smtp_data_reading_long_line_ending_in_a_dot_is_not_the_end() -> None:
    # A long line ending in ".\r\n" is not the lone dot (what a smuggling attempt
    # would try). The chunks are fed so that aiosmtpd's reader would have handed
    # the line over in pieces, the last one ".\r\n".
    smtp = GatewaySMTP(
        StubHandler(),
        tracker=ClientTracker(LIMITS),
        sessions=set(),
        data_timeout=LIMITS.data_timeout,
        data_size_limit=SIZE_LIMIT,
    )
    reader = asyncio.StreamReader(limit=smtp.line_length_limit)
    smtp._reader = reader
    smtp.transport = object()
    reader.feed_data(b"z" * 1500 + b".")
    reading = asyncio.ensure_future(smtp._read_data())
    await asyncio.sleep(0.05)
    reader.feed_data(b"\r\nMAIL FROM:<x@y>\r\n.\r\n")
    _content, refusal = (await asyncio.wait_for(reading, 5)).result()
    assert refusal is DataState.TOO_LONG  # answered R500_LINE_TOO_LONG
    assert reader.at_eof() is False and len(reader._buffer) == 0  # the lone dot was consumed


async def _outcome(data: bytes, bare: list[bool | None] | None = None) -> tuple[bytes, list[bytes]]:
    handler = StubHandler()
    server = await _start(GatewaySMTP, handler)
    try:
        answers = await _play(int(server.sockets[0].getsockname()[1]), data)
    finally:
        server.close()
        await server.wait_closed()
    if bare is not None:
        bare.extend(handler.bare)
    return answers[5], [original for original, _ in handler.delivered]


async def test_smtp_data_reading_unstuffs_dots_and_keeps_bare_line_ends() -> None:
    bare: list[bool | None] = []
    reply, delivered = await _outcome(TRANSCRIPTS["dot-stuffed"], bare)
    assert reply.startswith(b"250 ")
    assert delivered[0] == b".leading dot\r\n.\r\n..\r\nx\r\n \r\n"
    reply, delivered = await _outcome(TRANSCRIPTS["bare LF and CR kept"], bare)
    assert delivered[0] == b"a\nb\r\nc\rd\r\n\n.\n\r\n\rx\r\n"
    # The scanner saw them as it read (the pipeline does not count them again); each
    # session's second transaction is "second\r\n".
    assert bare == [False, False, True, False]


async def test_smtp_data_reading_limits_answer_after_the_dot() -> None:
    reply, delivered = await _outcome(TRANSCRIPTS["too much"])
    assert reply.decode().rstrip("\r\n") == replies.R552_TOO_BIG
    assert reply.startswith(b"552 5.3.4 ")
    assert delivered == [b"second\r\n"]  # only the next transaction reached the handler
    reply, delivered = await _outcome(TRANSCRIPTS["line far over"])
    assert reply.startswith(b"500 ")
    assert delivered == [b"second\r\n"]


async def test_smtp_data_reading_never_hands_on_a_message_cut_by_a_lost_connection() -> None:
    class Writer:
        closed = False

        def close(self) -> None:
            self.closed = True

    smtp = GatewaySMTP(
        StubHandler(),
        tracker=ClientTracker(LIMITS),
        sessions=set(),
        data_timeout=LIMITS.data_timeout,
        data_size_limit=SIZE_LIMIT,
    )
    reader = asyncio.StreamReader(limit=smtp.line_length_limit)
    writer = Writer()
    smtp._reader, smtp._writer = reader, writer  # type: ignore[assignment]
    smtp.transport = object()
    reader.feed_data(b"Subject: half\r\n")
    reading = asyncio.ensure_future(smtp._read_data())
    await asyncio.sleep(0.05)
    smtp.transport = None  # connection_lost
    reader.feed_data(b"of a message.\r\n")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(reading, 5)
    assert writer.closed
