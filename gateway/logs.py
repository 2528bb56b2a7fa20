"""Logging set-up: text or JSON lines, each with its fields and its correlation id.

A correlation id names one unit of work across every line it logs: an SMTP
transaction (`gateway.smtp.handler`), an IMAP message (`gateway.imap.puller`),
an HTTP request (the API calls `correlation()` around each one).  It lives in
a context variable, so lines logged from worker threads started with
`asyncio.to_thread` carry it too, and the formatters add it to every line.  A
`451 … (ref <id>)` reply, or an HTTP 503 problem, names that same id, so an
operator finds the details of the fault from the reply a sender quotes.

What goes into a line is chosen by the caller (`extra=`): never a code, a
credential, a password, a subject, a filename or a body.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# dkimpy's debug lines print a signature's tags, and its z= tag may copy header fields (the
# Subject): never below INFO, whatever logging.level says.
_HEADER_COPIES = "gateway.ingest.senderauth.dkimpy"
# Attributes every LogRecord has; anything else was passed in `extra=` and is a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
CORRELATION_FIELD = "correlation_id"
_CORRELATION: ContextVar[str | None] = ContextVar("gateway_correlation_id", default=None)


def new_correlation_id() -> str:
    """12 hex digits: short enough to read out over the phone, unique enough for a day's logs."""
    return uuid.uuid4().hex[:12]


@contextmanager
def correlation(correlation_id: str | None = None) -> Iterator[str]:
    """Name the unit of work run inside the block (a new id unless one is given).

    For the HTTP API, around each request (an ASGI middleware can wrap
    ``await app(scope, receive, send)`` in it), and `current_correlation_id()`
    gives the id to put in a 503 problem.
    """
    value = correlation_id or new_correlation_id()
    token = _CORRELATION.set(value)
    try:
        yield value
    finally:
        _CORRELATION.reset(token)


def current_correlation_id() -> str | None:
    """The id of the unit of work running now, if any."""
    return _CORRELATION.get()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    current = _CORRELATION.get()
    if current is not None:
        fields.setdefault(CORRELATION_FIELD, current)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, correlation id, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return text


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at `level`, as text lines or (`log_format` "json") JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mail.log", "aiosmtpd", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger(_HEADER_COPIES).setLevel(max(logging.INFO, root.level))
