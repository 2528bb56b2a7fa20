"""The sweeper: seals requests whose code expired, every minute, under `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.model import Clock
from gateway.otp.service import seal_expired
from gateway.storage.db import Database

log = logging.getLogger("gateway.serve")
SWEEP_INTERVAL = 60.0


class Sweeper:
    """Seals expired requests (an expired code seals its request on use, too)."""

    def __init__(self, db: Database, clock: Clock, interval: float = SWEEP_INTERVAL) -> None:
        self.db = db
        self.clock = clock
        self.interval = interval

    def sweep_once(self) -> list[str]:
        with self.db.transaction() as session:
            return seal_expired(session, self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sealed = await asyncio.to_thread(self.sweep_once)
                if sealed:
                    log.info("sealed expired requests", extra={"count": len(sealed)})
            except Exception:
                log.exception("sweeper failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
