"""aiosmtpd's private hooks used by `gateway.smtp.protocol`, and nothing else of its internals.

`GatewaySMTP` reads DATA itself (in large pieces) and so replaces
aiosmtpd's `smtp_DATA`; doing that needs the session's stream, its
timeout timer, the handler hook dispatch and the post-DATA reset, which
aiosmtpd keeps private.  When aiosmtpd changes, re-read `SMTP.smtp_DATA`,
`_handle_client`, `_reset_timeout`, `_call_handler_hook` and
`_set_post_data_state` in aiosmtpd/smtp.py against these functions.
The submission port (`gateway.smtp.auth`) relies on the replies and the
warning named below; re-read `smtp_EHLO`, `smtp_AUTH` and `SMTP.__init__`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from aiosmtpd.smtp import SMTP

LIBRARY = "aiosmtpd"
WRITTEN_AGAINST = "1.4.6"

OWN_OVERSIZE_REPLY_PREFIX = "552 Error:"
"""How aiosmtpd's own replies to an oversized message begin (MAIL ... SIZE=, DATA)."""
OWN_STARTTLS_FIRST_REPLY = "530 Must issue a STARTTLS command first"
"""aiosmtpd's reply (no enhanced code) to a command before STARTTLS when TLS is required."""
OWN_AUTH_ADVERTISEMENT_PREFIX = "250-AUTH "
"""The EHLO line aiosmtpd adds to advertise its AUTH mechanisms."""


@contextlib.contextmanager
def implicit_tls_auth() -> Iterator[None]:
    """Build a session that takes AUTH on a port whose transport is TLS from the first byte.

    aiosmtpd sees TLS only when it ran STARTTLS itself, so on an implicit-TLS
    port AUTH needs `auth_require_tls=False`, and aiosmtpd warns about that
    combination when the session is built.  The warning is silenced here
    only: the listener never builds such a session without TLS.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
        yield


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


class _LoginDataDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")


def quiet_login_data_warning() -> None:
    """Drop the WARNING aiosmtpd 1.4 logs at every successful AUTH.

    Its own `smtp_AUTH` sets the deprecated `Session.login_data`, whose
    setter logs "Session.login_data is deprecated" on the `mail.log` logger:
    noise in an operator's log for something no caller of ours did.
    """
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _LoginDataDeprecation) for f in logger.filters):
        logger.addFilter(_LoginDataDeprecation())
