"""Running parts: the one lifecycle (start, stop with a grace period) every listener and worker has.

Like Postfix's master and its small services, `gateway serve` is a list of
running parts built by the composition root (`gateway.app`): each SMTP
listener, each IMAP watcher, the outbox worker, the sweeper, the HTTP
server.  The root starts them in order and stops them in reverse order;
nothing else starts or stops one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

log = logging.getLogger("gateway.lifecycle")


class RunningPart(Protocol):
    """Something `serve` runs: started once, stopped once."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None:
        """Be running when this returns (a listener is bound, a loop is scheduled)."""

    async def stop(self, grace: float) -> None:
        """Finish what is in flight within `grace` seconds, then stop for good."""


Loop = Callable[[asyncio.Event], Awaitable[None]]
"""A background loop that returns soon after the event it is given is set."""


class LoopingPart:
    """A running part that is one background loop (the outbox, a watcher, the sweeper).

    `stop` sets the loop's event and waits up to `grace` for it to return;
    after that the task is cancelled, so a stuck loop never holds shutdown.
    """

    def __init__(self, name: str, loop: Loop) -> None:
        self._name = name
        self._loop = loop
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        try:
            await self._loop(self._stop)
        except asyncio.CancelledError:
            raise
        except Exception:  # a loop must handle its own faults; say so loudly if it did not
            log.exception("running part %s stopped on an error", self._name)

    async def stop(self, grace: float) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=max(grace, 0.1))
        except TimeoutError:
            log.warning("running part %s did not stop within %.0fs", self._name, grace)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Supervisor:
    """Starts running parts in order and stops them in reverse order."""

    def __init__(self, parts: Sequence[RunningPart]) -> None:
        self.parts = list(parts)
        self._started: list[RunningPart] = []

    async def start(self) -> None:
        """Start every part; if one fails, stop those already started and re-raise."""
        for part in self.parts:
            try:
                await part.start()
            except BaseException:
                await self.stop(0)
                raise
            self._started.append(part)
            log.debug("started %s", part.name)

    async def stop(self, grace: float) -> None:
        """Stop the started parts, last first; one part's failure does not skip the others."""
        while self._started:
            part = self._started.pop()
            try:
                await part.stop(grace)
            except Exception:
                log.exception("stopping %s failed", part.name)
