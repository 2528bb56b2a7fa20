"""Periodic jobs of `serve` that run once per period for the whole cluster (a database lease).

Every node sharing the database runs the same loop: every `poll` seconds it
tries to take the job's lease (`DbLease.take_if_expired`), which only one
node can do once per `period`.  The node that takes it runs the job; the
lease stays taken for the rest of the period, across restarts, so "daily"
means daily for the cluster, not per node or per start.  A job that fails
gives its lease back, so some node retries at its next poll instead of a
period later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from gateway.storage.leases import DbLease

log = logging.getLogger("gateway.jobs")


@dataclass(frozen=True)
class Schedule:
    """How often the cluster jobs run (the seam tests shorten)."""

    period: timedelta = timedelta(days=1)
    """Once per this, cluster-wide."""
    poll: float = 300.0
    """Seconds between a node's tries; also the delay before the first one after a start."""


class ClusterJob:
    """One job, its lease, and what to refresh at every poll (the metrics of its last result)."""

    def __init__(
        self,
        name: str,
        lease: DbLease,
        work: Callable[[], object],
        *,
        poll: float,
        every_poll: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.lease = lease
        self.work = work
        self.poll = poll
        self.every_poll = every_poll

    def run_if_due(self) -> bool:
        """Run the job if this node takes the lease; True when it ran (blocking)."""
        if not self.lease.take_if_expired():
            return False
        try:
            self.work()
        except BaseException:
            with contextlib.suppress(Exception):  # then the lease runs out instead
                self.lease.release()  # let a node retry at its next poll
            raise
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """The looping part: wait a poll, try, refresh, until `stop` is set."""
        await self._refresh()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.poll)
            if stop.is_set():
                break
            try:
                if await asyncio.to_thread(self.run_if_due):
                    log.info("cluster job ran", extra={"job": self.name})
            except Exception:
                log.exception("cluster job failed; will retry", extra={"job": self.name})
            await self._refresh()

    async def _refresh(self) -> None:
        if self.every_poll is None:
            return
        try:
            await asyncio.to_thread(self.every_poll)
        except Exception:
            log.exception("cluster job refresh failed", extra={"job": self.name})
