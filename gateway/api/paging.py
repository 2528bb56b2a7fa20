"""Cursor paging: an opaque `cursor` query parameter, `limit`, and the page's `next_cursor`."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Query

from gateway.errors import InputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

Cursor = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]*$",
        description="`next_cursor` of the previous page; omit it for the first page.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]


def decode_cursor(cursor: str | None) -> int:
    """The position a cursor stands for (0: the start); InputError for one we did not make."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InputError("invalid cursor") from None
    kind, _, number = text.partition(":")
    if kind != "after" or not number.isdigit() or len(number) > 18:
        raise InputError("invalid cursor")
    return int(number)


def encode_cursor(after: int | None) -> str | None:
    if after is None:
        return None
    return base64.urlsafe_b64encode(f"after:{after}".encode("ascii")).decode("ascii").rstrip("=")
