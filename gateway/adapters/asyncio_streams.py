"""asyncio.StreamReader's private limit and buffer: DATA in large pieces, bytes sent too early."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator

LIBRARY = "python"
WRITTEN_AGAINST = "3.11"
"""StreamReader keeps its limit in `_limit` and its bytes in `_buffer` from 3.7 to 3.13 at least."""
KNOWN_VERSIONS = frozenset({"3.11", "3.12", "3.13"})


def installed_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@contextlib.contextmanager
def raised_limit(reader: asyncio.StreamReader, at_least: int) -> Iterator[None]:
    """`readuntil` may return up to `at_least` bytes at once inside this block.

    aiosmtpd builds its reader with a one-line limit (and pauses the socket at
    twice that); DATA wants far larger pieces.  The limit is restored after.
    """
    saved: int = reader._limit  # type: ignore[attr-defined]
    reader._limit = max(saved, at_least)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        reader._limit = saved  # type: ignore[attr-defined]


def buffered_bytes(reader: asyncio.StreamReader) -> int:
    """How many bytes the client sent that nobody has read yet."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    return len(buffer)


def discard_buffered(reader: asyncio.StreamReader) -> None:
    """Forget what the client sent and nobody read: a session we close must not act on it."""
    buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
    buffer.clear()
