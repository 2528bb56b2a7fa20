"""One measured point: run the client process against a server and read the server's costs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import metrics, procstat
from bench.stats import latency_summary


@dataclass
class Target:
    """A server under load: where to send, whose /proc to read, where its /metrics are."""

    name: str
    port: int
    pid: int | None
    rcpts: list[str]
    mail_from: str
    metrics_url: str | None = None
    settle: Callable[[int], dict[str, Any]] | None = None
    """Called with the number of accepted messages after the load: waits for deferred work."""
    aux_pid: int | None = None
    """A helper whose CPU is reported apart (the PostgreSQL postmaster)."""
    extra_pids: list[int] = field(default_factory=list)
    """Other daemons of the same server, their CPU counted with its own (OpenDKIM)."""
    reaped: bool = False
    """Count the CPU of descendants that exited and were waited for (see procstat.tree_cpu)."""

    def cpu(self) -> float:
        """CPU seconds of the server's process trees so far."""
        assert self.pid is not None
        return sum(procstat.tree_cpu(pid, self.reaped) for pid in [self.pid, *self.extra_pids])


@dataclass
class Point:
    target: str
    size_label: str
    sessions: int
    count: int
    result: dict[str, Any] = field(default_factory=dict)


class RssSampler:
    """Samples the tree's VmRSS every 50 ms (a fallback when VmHWM cannot be reset)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kb = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, procstat.tree_memory_kb(self.pid, "VmRSS"))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """The client in its own process; its JSON result."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.client"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client failed: {proc.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def measure(
    target: Target, template: Path, size_label: str, sessions: int, count: int, rate: float = 0.0
) -> Point:
    """Drive one point and summarise it (rates, latencies, server CPU and RSS, stages)."""
    spec = {
        "host": "127.0.0.1",
        "port": target.port,
        "sessions": sessions,
        "count": count,
        "template": str(template),
        "rcpts": target.rcpts,
        "mail_from": target.mail_from,
        "run_id": f"{int(time.time() * 1000) % 10**8:x}",
        "rate": rate,
    }
    pid = target.pid
    loadavg = Path("/proc/loadavg").read_text().split()[0]
    idle_kb = procstat.tree_memory_kb(pid, "VmRSS") if pid else None
    hwm_reset = procstat.reset_peak_rss(pid) if pid else False
    before = metrics.scrape(target.metrics_url) if target.metrics_url else None
    cpu0 = target.cpu() if pid else None
    aux0 = procstat.tree_cpu(target.aux_pid) if target.aux_pid else None
    wall0 = time.perf_counter()
    if pid:
        with RssSampler(pid) as sampler:
            raw = run_client(spec)
        load_cpu = target.cpu() - (cpu0 or 0.0)
    else:
        raw = run_client(spec)
    settled = target.settle(raw["ok"]) if target.settle else {}
    point = Point(target.name, size_label, sessions, count)
    res = point.result
    if rate:
        res["offered_rate"] = round(rate, 2)
    res.update(settled)
    res["loadavg_before"] = float(loadavg)
    res["ok"], res["elapsed_s"] = raw["ok"], round(raw["elapsed_s"], 3)
    res["msgs_per_s"] = round(raw["ok"] / raw["elapsed_s"], 2) if raw["elapsed_s"] else None
    if "delivered" in settled and raw["elapsed_s"]:
        # Delivered (in the maildir) over the load's time and the wait for the last one.
        span = raw["elapsed_s"] + settled["delivery_wait_s"]
        res["delivered_per_s"] = round(settled["delivered"] / span, 2)
    res.update(latency_summary(raw["latencies"]))
    res["replies"], res["samples"] = raw["replies"], raw["samples"]
    res["message_bytes"] = raw["message_bytes"]
    res["client_cpu_ms_per_msg"] = _per_msg(raw["client_cpu_s"], raw["ok"])
    if pid and cpu0 is not None:
        res["server_cpu_ms_per_msg"] = _per_msg(target.cpu() - cpu0, raw["ok"])
        res["server_cpu_load_ms_per_msg"] = _per_msg(load_cpu, raw["ok"])
        res["window_s"] = round(time.perf_counter() - wall0, 2)
        if target.aux_pid and aux0 is not None:
            aux = procstat.tree_cpu(target.aux_pid) - aux0
            # PostgreSQL backends that exit during the point take their CPU time
            # with them: a shrinking tree says nothing, so no figure.
            res["db_cpu_ms_per_msg"] = _per_msg(aux, raw["ok"]) if aux >= 0 else None
        hwm = procstat.tree_memory_kb(pid, "VmHWM") if hwm_reset else 0
        res["idle_rss_mb"] = round((idle_kb or 0) / 1024, 1)
        res["peak_rss_mb"] = round(max(hwm, sampler.peak_kb) / 1024, 1)
    if before is not None and target.metrics_url:
        after = metrics.scrape(target.metrics_url)
        if after is not None:
            res["stages"] = metrics.stage_means(before, after)
            res["commit_batch_mean"] = metrics.histogram_mean(
                before, after, "gateway_commit_batch_messages"
            )
            res["outcomes"] = metrics.counter_delta(
                before, after, "gateway_messages_total", "outcome"
            )
    return point


def _per_msg(seconds: float, messages: int) -> float | None:
    return round(seconds * 1000 / messages, 3) if messages else None
