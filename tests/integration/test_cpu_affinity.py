"""`gateway.pin_cpu`: each process of `serve` keeps to one CPU, each worker to its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs or more to choose from",
)
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


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
    config: Path, dns: DnsServer, *args: str, **env: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    environ = {
        **os.environ,
        "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{port}",
        "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{free_port()}",
        "GATEWAY__DNS__NAMESERVERS": json.dumps([dns.address]),
        **env,
    }
    log = config.parent / "serve.log"  # a file, not a pipe nobody reads while it runs
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(config), "serve", *args],
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text(errors='replace')[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(100).startswith(b"220"):
                    return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError("gateway serve did not listen")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@sqlite_only
def test_serve_keeps_every_thread_to_one_cpu(gateway_config: Path, dns_server: DnsServer) -> None:
    process, _ = _serve(gateway_config, dns_server)
    try:
        threads = _affinities(process.pid)
        assert len(threads) > 5  # the event loop, the pools' threads, the sweepers …
        assert len(set(threads)) == 1, threads
        [cpus] = set(threads)
        assert len(cpus) == 1 and cpus <= os.sched_getaffinity(0)
    finally:
        _stop(process)


@sqlite_only
def test_pin_cpu_false_leaves_serve_on_every_cpu(
    gateway_config: Path, dns_server: DnsServer
) -> None:
    process, _ = _serve(gateway_config, dns_server, GATEWAY__GATEWAY__PIN_CPU="false")
    try:
        assert set(_affinities(process.pid)) == {frozenset(os.sched_getaffinity(0))}
    finally:
        _stop(process)


@sqlite_only
def test_workers_and_the_outbox_process_each_keep_to_a_cpu_of_their_own(
    gateway_config: Path, dns_server: DnsServer
) -> None:
    """Worker i on the i-th CPU, the outbox process on the next (wrapping: on two CPUs, the
    first again); the parent, which only serves the API, stays free."""
    process, _ = _serve(gateway_config, dns_server, "--workers", "2", "--outbox-process")
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
        _stop(process)


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
