"""The load client: N messages over S reused SMTP sessions, timing end of DATA to the reply.

Run as its own process (`python -m bench.client`, a JSON spec on stdin, a JSON
result on stdout) so its CPU is not the harness's.  Raw asyncio streams keep
its own cost low.  Every message is one template whose Message-ID (not a
DKIM-signed header) is replaced by a unique value of the same length.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PLACEHOLDER = b"BENCHMSGID-0000000000000000"


@dataclass
class Spec:
    host: str
    port: int
    sessions: int
    count: int
    template: Path
    rcpts: list[str]
    mail_from: str
    run_id: str = "r"
    timeout: float = 900.0
    rate: float = 0.0
    """Messages per second to offer (open-loop pacing); 0 sends as fast as replies come."""


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    replies: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    next_index: int = 0
    reconnects: int = 0
    started: float = 0.0

    def take(self, count: int) -> int | None:
        if self.next_index >= count:
            return None
        self.next_index += 1
        return self.next_index - 1

    def note(self, reply: str) -> None:
        self.replies[reply[:3]] += 1
        if not reply.startswith("2") and len(self.samples) < 5:
            self.samples.append(reply[:200])


def unique_id(run_id: str, index: int) -> bytes:
    """A Message-ID local part exactly as long as the placeholder."""
    text = f"{run_id[:8]}-{index:x}".encode()
    return text.ljust(len(PLACEHOLDER), b"x")[: len(PLACEHOLDER)]


def dot_stuff(raw: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2) plus the end-of-data marker."""
    body = raw if raw.endswith(b"\r\n") else raw + b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\r\n.", b"\r\n..") + b".\r\n"


class Session:
    """One SMTP connection doing MAIL/RCPT/DATA loops."""

    def __init__(self, spec: Spec, parts: tuple[bytes, bytes]) -> None:
        self.spec, self.parts = spec, parts
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.spec.host, self.spec.port, limit=1 << 20
        )
        greeting = await self.reply()
        if not greeting.startswith("220"):
            raise ConnectionError(greeting)
        await self.command(b"EHLO bench.client")

    async def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.write(b"QUIT\r\n")
                await self.writer.drain()
                self.writer.close()
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def reply(self) -> str:
        assert self.reader is not None
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed by server")
            lines.append(line.decode("utf-8", "replace").rstrip())
            if len(line) < 4 or line[3:4] != b"-":
                return " / ".join(lines)

    async def command(self, line: bytes) -> str:
        assert self.writer is not None
        self.writer.write(line + b"\r\n")
        return await self.reply()

    async def send(self, index: int, tally: Tally) -> None:
        spec = self.spec
        rcpt = spec.rcpts[index % len(spec.rcpts)]
        for line in (f"MAIL FROM:<{spec.mail_from}>".encode(), f"RCPT TO:<{rcpt}>".encode()):
            reply = await self.command(line)
            if not reply.startswith("250"):
                tally.note(reply)
                await self.command(b"RSET")
                return
        reply = await self.command(b"DATA")
        if not reply.startswith("354"):
            tally.note(reply)
            return
        assert self.writer is not None
        self.writer.write(self.parts[0] + unique_id(spec.run_id, index) + self.parts[1])
        await self.writer.drain()
        started = time.perf_counter()
        reply = await self.reply()
        if reply.startswith("250"):
            tally.latencies.append(time.perf_counter() - started)
        tally.note(reply)


async def _worker(session: Session, tally: Tally, go: asyncio.Event) -> None:
    await go.wait()
    loop = asyncio.get_running_loop()
    while (index := tally.take(session.spec.count)) is not None:
        if session.spec.rate > 0:
            # Message i is due at start + i/rate: a slow reply does not lower the offered load.
            await asyncio.sleep(max(0.0, tally.started + index / session.spec.rate - loop.time()))
        try:
            if session.writer is None:
                tally.reconnects += 1
                await session.connect()
            await session.send(index, tally)
        except (ConnectionError, OSError) as exc:
            tally.note(f"ERR {exc}")
            session.writer = None
    await session.close()


async def run(spec: Spec) -> dict[str, Any]:
    raw = spec.template.read_bytes()
    stuffed = dot_stuff(raw)
    if PLACEHOLDER not in stuffed:
        raise ValueError("template has no Message-ID placeholder")
    head, tail = stuffed.split(PLACEHOLDER, 1)
    tally = Tally()
    sessions = [Session(spec, (head, tail)) for _ in range(spec.sessions)]
    await asyncio.gather(*(s.connect() for s in sessions))
    go = asyncio.Event()
    workers = [asyncio.create_task(_worker(s, tally, go)) for s in sessions]
    cpu0, started = time.process_time(), time.perf_counter()
    tally.started = asyncio.get_running_loop().time()
    go.set()
    await asyncio.wait_for(asyncio.gather(*workers), spec.timeout)
    elapsed = time.perf_counter() - started
    return {
        "elapsed_s": elapsed,
        "ok": len(tally.latencies),
        "latencies": tally.latencies,
        "replies": dict(tally.replies),
        "samples": tally.samples,
        "reconnects": tally.reconnects,
        "client_cpu_s": time.process_time() - cpu0,
        "client_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "message_bytes": len(raw),
    }


def main() -> None:
    data = json.load(sys.stdin)
    spec = Spec(**{**data, "template": Path(data["template"])})
    json.dump(asyncio.run(run(spec)), sys.stdout)


if __name__ == "__main__":
    main()
