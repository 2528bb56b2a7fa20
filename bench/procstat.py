"""CPU time and memory of a process tree, read from /proc (no psutil)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def parse_stat_cpu(stat_line: str, reaped: bool = False) -> float:
    """utime + stime in seconds from one /proc/<pid>/stat line (the name may contain spaces).

    With `reaped`, also cutime + cstime: what the children it waited for used.
    """
    fields = stat_line.rsplit(")", 1)[1].split()
    # After the name: state is field 3 (index 0 here); utime, stime are fields 14 and 15,
    # cutime and cstime 16 and 17.
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def parse_status_kb(status_text: str, key: str) -> int | None:
    """A 'Key:   1234 kB' value of /proc/<pid>/status, in kB."""
    for line in status_text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def descendants(pid: int) -> list[int]:
    """pid and all its live descendants (via /proc/<pid>/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:  # a child may exit while we look (Postfix's pipe(8) runs one per message)
            tasks = list((PROC / str(current) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                queue.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def tree_cpu(pid: int, reaped: bool = False) -> float:
    """CPU seconds used so far by pid and its live descendants.

    With `reaped`, the descendants that exited and were waited for count too
    (their time is in their parent's cutime/cstime): for servers that run a
    process per message (Postfix's pipe(8) running gpg).
    """
    total = 0.0
    for member in descendants(pid):
        try:
            total += parse_stat_cpu((PROC / str(member) / "stat").read_text(), reaped)
        except OSError:
            continue
    return total


def tree_memory_kb(pid: int, key: str) -> int:
    """Sum of a /proc status field (VmRSS, VmHWM) over the tree."""
    total = 0
    for member in descendants(pid):
        try:
            total += parse_status_kb((PROC / str(member) / "status").read_text(), key) or 0
        except OSError:
            continue
    return total


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM of the tree (writing 5 to clear_refs; root or owner only)."""
    ok = True
    for member in descendants(pid):
        try:
            (PROC / str(member) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok
