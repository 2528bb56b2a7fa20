"""Paging cursors: opaque, round-trip, and only ours are accepted."""

from __future__ import annotations

import pytest

from gateway.api.paging import decode_cursor, encode_cursor
from gateway.errors import InputError


@pytest.mark.parametrize("position", [1, 42, 2**31 - 1, 10**17])
def test_cursor_round_trips(position: int) -> None:
    cursor = encode_cursor(position)
    assert cursor is not None and str(position) not in cursor
    assert decode_cursor(cursor) == position


def test_no_cursor_is_the_start_and_the_end_is_none() -> None:
    assert decode_cursor(None) == 0 and decode_cursor("") == 0
    assert encode_cursor(None) is None


@pytest.mark.parametrize("cursor", ["bm9wZQ", "!!", "YWZ0ZXI6LTE", "YWZ0ZXI6", "a" * 64])
def test_foreign_cursor_refused(cursor: str) -> None:
    with pytest.raises(InputError, match="cursor"):
        decode_cursor(cursor)
