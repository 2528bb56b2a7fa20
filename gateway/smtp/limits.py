"""SMTP limits, a session's bounds, and the client tracker the listeners share (421 and 450)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass

DATA_RATE_GRACE = 10.0
"""Seconds of DATA before `min_data_rate` applies: the first round trips, TCP's slow start."""


@dataclass(frozen=True, slots=True)
class SessionBounds:
    """What one session may take as a whole; None is no bound (aiosmtpd's own behaviour).

    `max_commands` counts every command of the session, whatever its verb;
    `max_session_time` is from the greeting to the close; DATA must bring
    `min_data_rate` bytes a second on average once `data_rate_grace` is over.
    """

    max_commands: int | None = None
    max_session_time: float | None = None
    min_data_rate: int | None = None
    data_rate_grace: float = DATA_RATE_GRACE

    def data_deadline(self, started: float, received: int) -> float | None:
        """When DATA begun at `started` is too slow, unless more than `received` bytes came."""
        if not self.min_data_rate:
            return None
        return started + self.data_rate_grace + received / self.min_data_rate


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    max_message_bytes: int
    max_recipients: int
    max_connections: int
    max_connections_per_client: int
    max_messages_per_client: int
    client_window: float
    max_commands: int
    idle_timeout: float
    min_data_rate: int
    max_session_time: float = 600.0
    data_rate_grace: float = DATA_RATE_GRACE

    @property
    def data_timeout(self) -> float:
        """DATA is one command for aiosmtpd's timer: the largest message at the minimum rate.

        The rate itself is enforced as DATA goes (`SessionBounds.data_deadline`);
        this timer is only the outer bound.
        """
        return self.idle_timeout + self.max_message_bytes / self.min_data_rate

    @property
    def session_bounds(self) -> SessionBounds:
        return SessionBounds(
            max_commands=self.max_commands,
            max_session_time=self.max_session_time,
            min_data_rate=self.min_data_rate,
            data_rate_grace=self.data_rate_grace,
        )


class ClientTracker:
    """Connections and message counts per client IP, for the whole gateway.

    One tracker is shared by every listener, so a client cannot double its
    allowance by opening sessions on two ports.  Used from the event loop
    only (no lock).
    """

    def __init__(self, limits: SmtpLimits) -> None:
        self.limits = limits
        self.connections: dict[str, int] = defaultdict(int)
        self.total = 0
        self._messages: dict[str, deque[float]] = defaultdict(deque)

    def open(self, ip: str) -> bool:
        if (
            self.total >= self.limits.max_connections
            or self.connections[ip] >= self.limits.max_connections_per_client
        ):
            return False
        self.connections[ip] += 1
        self.total += 1
        return True

    def close(self, ip: str) -> None:
        self.connections[ip] -= 1
        self.total -= 1
        if self.connections[ip] <= 0:
            del self.connections[ip]

    def message_allowed(self, ip: str) -> bool:
        now = time.monotonic()
        window = self._messages[ip]
        while window and window[0] <= now - self.limits.client_window:
            window.popleft()
        if len(window) >= self.limits.max_messages_per_client:
            return False
        window.append(now)
        return True
