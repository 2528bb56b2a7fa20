"""aiosmtpd's private hooks used by `gateway.smtp.protocol`, and nothing else of its internals.

`GatewaySMTP` reads DATA itself (in large pieces) and so replaces
aiosmtpd's `smtp_DATA`; doing that needs the session's stream, its
timeout timer, the handler hook dispatch and the post-DATA reset, which
aiosmtpd keeps private.  It also bounds a session as a whole, which needs a
call before every command and the inactivity timer's expiry: `HookedSMTP`
turns those two private places into public methods.  When aiosmtpd changes,
re-read `SMTP.__init__` (`_smtp_methods`), `smtp_DATA`, `_handle_client`,
`_reset_timeout` (and every use of `_timeout_handle`), `_timeout_cb`,
`_call_handler_hook`, `_set_post_data_state`, `_create_envelope`,
`smtp_STARTTLS` (`_tls_protocol`), `_getaddr`, `sanitized_log` and the
logger name in aiosmtpd/smtp.py against this module.
The submission port (`gateway.smtp.auth`) relies on the replies and the
warning named below; re-read `smtp_EHLO`, `smtp_AUTH` and `SMTP.__init__`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, Envelope

from gateway.escaping import escape

LIBRARY = "aiosmtpd"
WRITTEN_AGAINST = "1.4.6"

OWN_OVERSIZE_REPLY_PREFIX = "552 Error:"
"""How aiosmtpd's own replies to an oversized message begin (MAIL ... SIZE=, DATA)."""
OWN_STARTTLS_FIRST_REPLY = "530 Must issue a STARTTLS command first"
"""aiosmtpd's reply (no enhanced code) to a command before STARTTLS when TLS is required."""
OWN_AUTH_REQUIRED_REPLY = "530 5.7.0 Authentication required"
"""aiosmtpd's reply to MAIL (and the like) before AUTH when AUTH is required."""
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


LOGGER_NAME = "mail.log"
"""aiosmtpd's logger: it logs the client's verb and addresses as they came."""

Command = Callable[[str | None], Awaitable[None]]


class GatewayEnvelope(Envelope):
    """aiosmtpd's envelope, with what the DATA scanner saw of the message's line endings."""

    bare_line_ending: bool | None = None
    """True or False once DATA was read by the gateway's scanner; None: not looked at."""


class HookedSMTP(SMTP):
    """aiosmtpd's SMTP with a public hook before each command and on inactivity.

    `command_allowed(verb)` is awaited before every recognised command runs
    (after aiosmtpd's own checks); a false answer skips the command.
    `inactivity_timeout()` replaces aiosmtpd's silent close when the timer
    (idle, or DATA's) runs out.  Unrecognised verbs stay aiosmtpd's (five,
    then 502 and close).
    """

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._deadline = 0.0
        self._timer_armed = False
        super().__init__(handler, **kwargs)
        self._smtp_methods = {
            verb: self._guarded(verb, method) for verb, method in self._smtp_methods.items()
        }

    def _guarded(self, verb: str, method: Command) -> Command:
        @functools.wraps(method)  # keeps the @syntax attributes HELP reads
        async def guarded(arg: str | None) -> None:
            if await self.command_allowed(verb):
                await method(arg)

        return guarded

    async def command_allowed(self, verb: str) -> bool:
        return True

    def _create_envelope(self) -> Envelope:
        return GatewayEnvelope()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's inactivity timer, moved on without a new timer at every command.

        Upstream cancels its TimerHandle and schedules another for each command
        (and the event loop's heap keeps every cancelled one until it comes
        due).  Here the deadline moves and the one timer, when it comes due
        early, waits again for the deadline; a sooner deadline (a shorter
        duration) schedules a timer of its own.
        """
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is None or not self._timer_armed or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._timer_due)
            self._timer_armed = True

    def _timer_due(self) -> None:
        if self.loop.time() < self._deadline:  # a command came meanwhile
            self._timeout_handle = self.loop.call_at(self._deadline, self._timer_due)
            return
        self._timer_armed = False
        self._timeout_cb()

    def _timeout_cb(self) -> None:
        self.inactivity_timeout()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's parse of a MAIL or RCPT address, without its cost.

        Upstream defines a typing class on every call (about 50 us, twice a
        message); the parse itself is the same and its result is cached per
        argument text.
        """
        address, rest = smtp_address(arg)
        limit = self.local_part_limit
        if address and limit and len(address.rpartition("@")[0]) > limit:
            return None, None
        return address, rest

    def inactivity_timeout(self) -> None:
        super()._timeout_cb()  # type: ignore[no-untyped-call]  # unannotated upstream


@functools.lru_cache(maxsize=1024)
def smtp_address(arg: str) -> tuple[str | None, str | None]:
    """(address, rest of the line) as aiosmtpd's `_getaddr` parses them; (None, None) if bad."""
    if not arg:
        return "", ""
    address: Any  # an AngleAddr or an AddrSpec token: both have addr_spec
    try:
        if arg.lstrip().startswith("<"):
            address, rest = get_angle_addr(arg)
        else:
            address, rest = get_addr_spec(arg)
    except HeaderParseError:
        return None, None
    return str(address.addr_spec), str(rest)


def reader(protocol: SMTP) -> asyncio.StreamReader:
    """The session's stream reader (set by aiosmtpd when the client connects)."""
    stream: asyncio.StreamReader = protocol._reader
    return stream


def writer(protocol: SMTP) -> asyncio.StreamWriter:
    """The session's stream writer (set by aiosmtpd when the client connects)."""
    stream: asyncio.StreamWriter = protocol._writer
    return stream


def reset_timeout(protocol: SMTP, seconds: float | None = None) -> None:
    """Restart the session's inactivity timer with `seconds`, or the idle timeout
    (aiosmtpd closes on expiry)."""
    protocol._reset_timeout(seconds)


def tls_started(protocol: SMTP) -> bool:
    """STARTTLS has already run in this session (aiosmtpd would layer a second TLS)."""
    return protocol._tls_protocol is not None


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


class _EscapeClientText(logging.Filter):
    """Escapes the arguments of aiosmtpd's log records: verbs, addresses, lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                escape(arg) if isinstance(arg, str | bytes) else arg for arg in record.args
            )
        return True


_ESCAPE_FILTER = _EscapeClientText()
_upstream_sanitized_log = aiosmtpd.smtp.sanitized_log
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def _sanitized_log(func: Callable[..., None], msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's `sanitized_log`, which masks AUTH lines, only when the line is logged.

    aiosmtpd calls it twice for every command line it reads (`log.debug` and
    `log.info` of the line), masking the arguments before the logger decides
    to drop them; the gateway keeps `mail.log` at WARNING.
    """
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _upstream_sanitized_log(func, msg, *args, **kwargs)


def escape_library_log() -> None:
    """Make aiosmtpd's own log lines safe: it logs what clients sent as they sent it.

    It logs an unrecognised verb with `%s` ("unrecognised: <ESC>[2J…") and
    MAIL/RCPT addresses the same way.  Idempotent.
    """
    logger = logging.getLogger(LOGGER_NAME)
    if _ESCAPE_FILTER not in logger.filters:
        logger.addFilter(_ESCAPE_FILTER)
    aiosmtpd.smtp.sanitized_log = _sanitized_log
