"""DataScanner (pieces) against aiosmtpd's line-by-line DATA loop, on random streams."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.ingest.pipeline import has_bare_line_ending
from gateway.smtp.data import DataScanner, DataState
from gateway.smtp.protocol import GatewaySMTP

LINE_LIMIT = 1001


async def aiosmtpd_loop(reader: asyncio.StreamReader, size_limit: int) -> tuple[bytes, DataState]:
    """aiosmtpd 1.4.6's smtp_DATA reading loop (reader limited to one line), reduced."""
    data: list[bytes] = []
    num_bytes, too_long, too_much, in_long_line = 0, False, False, False
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as exc:
            too_long = too_long or not too_much
            data = []
            line = await reader.read(exc.consumed)
        if not in_long_line and line == b".\r\n":
            break
        num_bytes += len(line)
        if not (too_long or too_much) and num_bytes > size_limit:
            too_much = True
            data = []
        in_long_line = not line.endswith(b"\r\n")
        if in_long_line or too_long or too_much:
            continue
        if len(line) > LINE_LIMIT:
            too_long = True
            data = []
            continue
        data.append(line[1:] if line.startswith(b".") else line)
    if too_long:
        return b"", DataState.TOO_LONG
    if too_much:
        return b"", DataState.TOO_MUCH
    return b"".join(data), DataState.NOMINAL


async def ours(
    chunks: list[bytes], size_limit: int, piece_limit: int = 1 << 20,
    seen: list[DataScanner] | None = None,
) -> tuple[bytes, DataState]:
    """GatewaySMTP's piece reading and the scanner, the stream arriving chunk by chunk."""
    reader = asyncio.StreamReader(limit=piece_limit)  # _read_data raises the limit so

    async def arrive() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)

    feeding = asyncio.ensure_future(arrive())
    scanner = DataScanner(size_limit, LINE_LIMIT)
    while not scanner.feed(await GatewaySMTP._read_piece(reader)):
        pass
    await feeding
    left = reader._buffer  # type: ignore[attr-defined]
    assert bytes(left) == b"NEXT\r\n"  # the command after DATA stays for the protocol
    if seen is not None:
        seen.append(scanner)
    return scanner.result()


async def reference(chunks: list[bytes], size_limit: int) -> tuple[bytes, DataState]:
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    reader.feed_data(b"".join(chunks))
    return await aiosmtpd_loop(reader, size_limit)


def random_line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.02:
        return b"y" * rng.choice([1500, 3000, 70_000]) + b"\r\n"  # far over the limit
    if kind < 0.05:
        return b"z" * (LINE_LIMIT - 2) + b"\r\n"  # exactly at the limit
    if kind < 0.08:
        return b"\r\n"
    body = bytes(rng.choice(b"ab .\r\n\t=-") for _ in range(rng.randint(0, 120)))
    body = body.replace(b"\r\n", b"\r-\n")  # no CRLF inside a line
    if body.endswith(b"\r"):
        body += b"x"
    if rng.random() < 0.2:
        body = b"." + body  # to be unstuffed
    if rng.random() < 0.1:
        body += b"."  # a line ending in a dot is not the end
    if body == b".":
        body = b".."  # a client stuffs the dot of a line that is only a dot
    return body + b"\r\n"


def split_randomly(stream: bytes, rng: random.Random) -> list[bytes]:
    chunks, start = [], 0
    while start < len(stream):
        size = rng.choice([1, 2, 3, 7, 64, 1000, 4096, 100_000])
        chunks.append(stream[start : start + size])
        start += size
    return chunks


@pytest.mark.parametrize("seed", range(300))
def test_scanner_matches_aiosmtpd(seed: int) -> None:
    rng = random.Random(seed)
    lines = [random_line(rng) for _ in range(rng.randint(0, 200))]
    body = b"".join(lines)
    size_limit = rng.choice([len(body) + 10, max(len(body) - rng.randint(0, 500), 1), 10**9])
    stream = body + b".\r\nNEXT\r\n"
    chunks = split_randomly(stream, rng)
    expected = asyncio.run(reference(chunks, size_limit))
    assert asyncio.run(ours(chunks, size_limit)) == expected
    # Small pieces: stretches without ".\r\n" arrive in several, cut anywhere but in a CRLF.
    seen: list[DataScanner] = []
    assert asyncio.run(ours(chunks, size_limit, piece_limit=257, seen=seen)) == expected
    content, state = expected
    if state is DataState.NOMINAL:  # what the pipeline's count would find in the message
        assert seen[0].bare_line_ending is has_bare_line_ending(content)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b".\r\nNEXT\r\n", b""),
        (b"\r\n.\r\nNEXT\r\n", b"\r\n"),
        (b"a.\r\n.\r\nNEXT\r\n", b"a.\r\n"),
        (b"..\r\n...\r\n.\r\nNEXT\r\n", b".\r\n..\r\n"),
        (b"a\r\n.b\r\n.\r\nNEXT\r\n", b"a\r\nb\r\n"),
        (b"a\n.\r\n.\r\nNEXT\r\n", b"a\n.\r\n"),  # a bare LF does not start a line
    ],
)
def test_scanner_edges(stream: bytes, message: bytes) -> None:
    for size in (1, 2, 3, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert asyncio.run(ours(chunks, 10_000)) == (message, DataState.NOMINAL)
        assert asyncio.run(ours(chunks, 10_000, piece_limit=5)) == (message, DataState.NOMINAL)


def test_a_piece_cut_between_cr_and_lf_keeps_the_next_line_start() -> None:
    # With a 5-byte reader limit the first piece would be "abcde\r": the LF is read
    # with it, so ".x" is seen at the start of a line and unstuffed.
    chunks = [b"abcde\r\n.", b"x\r\n.\r\nNEXT\r\n"]
    assert asyncio.run(ours(chunks, 10_000, piece_limit=5)) == (
        b"abcde\r\nx\r\n",
        DataState.NOMINAL,
    )
