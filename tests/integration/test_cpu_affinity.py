"""`gateway.pin_cpu`: each process of `serve` keeps to one CPU, each worker to its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.serveproc import GatewayHome, ServeNode, base_env
from tests.fixtures.smtpsink import SmtpSink

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs or more to choose from",
)


def _affinities(pid: int) -> list[frozenset[int]]:
    """The CPUs each thread of `pid` may run on."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found.append(frozenset(os.sched_getaffinity(int(task))))
        except ProcessLookupError:
            continue
    return found


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "-P", str(pid), "spawn_main"], capture_output=True, check=False
    ).stdout
    return [int(child) for child in out.split()]


def _serve(
    tmp_path: Path, dns: DnsServer, sink: SmtpSink, *args: str, **env: str
) -> tuple[ServeNode, subprocess.Popen[bytes]]:
    """`gateway serve *args` started on a fresh home (`ServeNode`), and its process."""
    home = GatewayHome.create(tmp_path, {**base_env(dns, sink), **env})
    node = ServeNode("affinity", home, serve_args=args)
    node.start()
    assert node.proc is not None
    return node, node.proc


def _stop(node: ServeNode, process: subprocess.Popen[bytes]) -> None:
    node.stop()
    assert process.returncode == 0


def test_serve_keeps_every_thread_to_one_cpu(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink
) -> None:
    node, process = _serve(tmp_path, dns_server, smtp_sink)
    try:
        threads = _affinities(process.pid)
        assert len(threads) > 5  # the event loop, the pools' threads, the sweepers …
        assert len(set(threads)) == 1, threads
        [cpus] = set(threads)
        assert len(cpus) == 1 and cpus <= os.sched_getaffinity(0)
    finally:
        _stop(node, process)


def test_pin_cpu_false_leaves_serve_on_every_cpu(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink
) -> None:
    node, process = _serve(tmp_path, dns_server, smtp_sink, GATEWAY__GATEWAY__PIN_CPU="false")
    try:
        assert set(_affinities(process.pid)) == {frozenset(os.sched_getaffinity(0))}
    finally:
        _stop(node, process)


def test_workers_and_the_outbox_process_each_keep_to_a_cpu_of_their_own(
    tmp_path: Path, dns_server: DnsServer, smtp_sink: SmtpSink
) -> None:
    """Worker i on the i-th CPU, the outbox process on the next (wrapping: on two CPUs, the
    first again); the parent, which only serves the API, stays free."""
    node, process = _serve(tmp_path, dns_server, smtp_sink, "--workers", "2", "--outbox-process")
    try:
        deadline = time.monotonic() + 30
        while len(children := _children(process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children) == 3
        pinned = []
        for child in children:
            # A spawned child pins itself once it has read its settings: wait for it.
            while time.monotonic() < deadline and len(os.sched_getaffinity(child)) != 1:
                time.sleep(0.1)
            threads = set(_affinities(child))
            assert len(threads) == 1, threads
            [cpus] = threads
            assert len(cpus) == 1
            pinned.append(next(iter(cpus)))
        cpus = sorted(os.sched_getaffinity(0))
        assert sorted(pinned) == sorted(cpus[i % len(cpus)] for i in range(3))
        assert set(_affinities(process.pid)) == {frozenset(os.sched_getaffinity(0))}
    finally:
        _stop(node, process)


def test_pinning_moves_the_threads_already_running_and_those_to_come() -> None:
    script = """
import os, threading, time
from gateway.affinity import pin_to_one_cpu
before = threading.Thread(target=time.sleep, args=(5,), daemon=True)
before.start()
cpu = pin_to_one_cpu(1)
after = threading.Thread(target=time.sleep, args=(5,), daemon=True)
after.start()
tasks = os.listdir("/proc/self/task")
print(cpu, len(tasks), sorted({tuple(os.sched_getaffinity(int(t))) for t in tasks}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip().split(maxsplit=2)
    second = sorted(os.sched_getaffinity(0))[1]
    assert out == [str(second), "3", f"[({second},)]"]
