"""PostgreSQL LISTEN/NOTIFY for the outbox: a queued mail wakes every node's outbox at once.

`enqueue` sends `NOTIFY gateway_outbox` in the transaction that queues the
row, so the notification is delivered when (and only if) that transaction
commits.  Each node listens on a connection of its own and wakes its outbox
worker, instead of polling; the worker of the process that queued the row
is also woken in process, after the commit (on SQLite, with one machine,
that is all there is, and this listener is not built).  If the listening connection is
lost the worker still polls (its interval is the fallback), and the
listener reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from gateway.storage.db import OUTBOX_QUEUED

log = logging.getLogger("gateway.outbox")
CHANNEL = "gateway_outbox"
NOTIFY = text(f"NOTIFY {CHANNEL}")
MAX_BACKOFF = 30.0


def notify_outbox(session: Session) -> None:
    """Tell the outbox that a row is due, at commit: this process's worker
    (`Database.outbox_queued`), and on PostgreSQL every listening node."""
    session.info[OUTBOX_QUEUED] = True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(NOTIFY)


def listen_url(engine: Engine) -> str:
    """The engine's database as a libpq URL (psycopg connects without SQLAlchemy)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class OutboxListener:
    """Calls `wake` for each NOTIFY on the outbox channel until stopped."""

    def __init__(self, url: str, wake: Callable[[], None]) -> None:
        self._url = url
        self._wake = wake
        self.listening = asyncio.Event()
        """Set while a LISTEN connection is open (tests wait for it)."""

    async def run(self, stop: asyncio.Event) -> None:
        import psycopg  # here, not at the top: only a PostgreSQL node listens

        delay = 1.0
        while not stop.is_set():
            try:
                await self._listen(stop)
                delay = 1.0
            except (OSError, psycopg.Error) as exc:
                self.listening.clear()
                log.warning(
                    "outbox listener lost its connection, polling meanwhile",
                    extra={"error": type(exc).__name__, "retry_in": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, MAX_BACKOFF)

    async def _listen(self, stop: asyncio.Event) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self._wake()  # rows queued while we were not listening
            while not stop.is_set():
                async for _notify in conn.notifies(timeout=1.0):
                    self._wake()
        self.listening.clear()
