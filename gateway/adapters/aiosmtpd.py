"""aiosmtpd's private hooks used by `gateway.smtp.protocol`, and nothing else of its internals.

`GatewaySMTP` reads DATA itself (in large pieces) and so replaces
aiosmtpd's `smtp_DATA`; doing that needs the session's stream, its
timeout timer, the handler hook dispatch and the post-DATA reset, which
aiosmtpd keeps private.  When aiosmtpd changes, re-read `SMTP.smtp_DATA`,
`_handle_client`, `_reset_timeout`, `_call_handler_hook` and
`_set_post_data_state` in aiosmtpd/smtp.py against these functions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.smtp import SMTP

LIBRARY = "aiosmtpd"
WRITTEN_AGAINST = "1.4.6"

OWN_OVERSIZE_REPLY_PREFIX = "552 Error:"
"""How aiosmtpd's own replies to an oversized message begin (MAIL ... SIZE=, DATA)."""


def reader(protocol: SMTP) -> asyncio.StreamReader:
    """The session's stream reader (set by aiosmtpd when the client connects)."""
    stream: asyncio.StreamReader = protocol._reader
    return stream


def writer(protocol: SMTP) -> asyncio.StreamWriter:
    """The session's stream writer (set by aiosmtpd when the client connects)."""
    stream: asyncio.StreamWriter = protocol._writer
    return stream


def reset_timeout(protocol: SMTP, seconds: float) -> None:
    """Restart the session's inactivity timer with `seconds` (aiosmtpd closes on expiry)."""
    protocol._reset_timeout(seconds)


def handles_data_itself(protocol: SMTP) -> bool:
    """True when aiosmtpd must read DATA (decoded data, or no DATA hook to hand it to)."""
    return bool(protocol._decode_data) or "DATA" not in protocol._handle_hooks


async def call_handler_hook(protocol: SMTP, command: str, *args: Any) -> Any:
    """Call the handler's `handle_<command>` as aiosmtpd does (MISSING when it has none)."""
    return await protocol._call_handler_hook(command, *args)


def reset_after_data(protocol: SMTP) -> None:
    """A fresh envelope after DATA, as aiosmtpd leaves the session after its own DATA."""
    protocol._set_post_data_state()  # type: ignore[no-untyped-call]  # unannotated upstream
