"""SMTP limits, and the client tracker the gateway's listeners share (421 and 450 limits)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass


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

    @property
    def data_timeout(self) -> float:
        """DATA is one command for aiosmtpd's timer: the largest message at the minimum rate."""
        return self.idle_timeout + self.max_message_bytes / self.min_data_rate


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
