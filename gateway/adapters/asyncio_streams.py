"""asyncio.StreamReader's private read limit, raised for a while to read DATA in large pieces."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator

LIBRARY = "python"
WRITTEN_AGAINST = "3.11"
"""StreamReader keeps its limit in `_limit` from 3.7 to 3.13 at least; the tests check 3.11+."""
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
