"""Keeping a gateway process on one CPU (`gateway.pin_cpu`).

The accept path is bound by the interpreter lock: one process uses about one
CPU whatever the machine has.  Its threads hand the lock to each other
hundreds of times a message (every SQLite statement, file call and fsync lets
it go), and when they sit on different CPUs each hand-over wakes a CPU with an
interrupt; on a virtual machine that is an exit to the hypervisor.  On one CPU
the next thread runs where the lock was let go.  Measured on the bench's
two-CPU virtual machine: a quarter less CPU a message at 5 KB, and more
messages a second (README, Performance).

`serve` keeps to the CPU it started on (the kernel chose it); `serve
--workers N` puts its i-th process on the i-th CPU it may use, and the outbox
process on the next, so they do not share one.  Linux only; elsewhere, and
when the call is refused, the process runs as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("gateway.serve")


def choose_cpu(allowed: Collection[int], index: int | None, current: int | None) -> int | None:
    """The CPU to keep to: the `index`-th of `allowed` (in order, wrapping), else `current`
    if allowed, else the first; None when there is no choice to make (one CPU or none)."""
    cpus = sorted(allowed)
    if len(cpus) < 2:
        return None
    if index is not None:
        return cpus[index % len(cpus)]
    return current if current in cpus else cpus[0]


def current_cpu() -> int | None:
    """The CPU this thread last ran on (field 39 of /proc/self/stat), or None."""
    try:
        stat = Path("/proc/self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def pin_to_one_cpu(index: int | None = None) -> int | None:
    """Keep this process, its threads already started and those to come, to one CPU.

    `index` None: the CPU it runs on now; otherwise the `index`-th of those it
    may use.  Returns the CPU, or None when there was nothing to do or the
    system refused (then it says so in the log and the process runs anywhere).
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    cpu = choose_cpu(allowed, index, current_cpu())
    if cpu is None:
        return None
    try:
        tasks = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        tasks = [0]
    # Linux sets one thread's affinity per call; new threads inherit their creator's.
    for task in tasks:
        try:
            os.sched_setaffinity(task, {cpu})
        except ProcessLookupError:  # a thread that has just ended
            continue
        except OSError as error:
            log.warning("could not keep the process to one CPU (%s): it runs on any", error)
            _set_all(tasks, allowed)  # as it was, rather than half pinned
            return None
    log.info("process kept to one CPU", extra={"cpu": cpu})
    return cpu


def pin_as_configured(settings: Settings, index: int | None = None) -> int | None:
    """`pin_to_one_cpu(index)` unless `gateway.pin_cpu` is false (then None)."""
    return pin_to_one_cpu(index) if settings.gateway.pin_cpu else None


def _set_all(tasks: list[int], cpus: set[int]) -> None:
    for task in tasks:
        try:
            os.sched_setaffinity(task, cpus)
        except OSError:
            continue
