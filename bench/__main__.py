"""`python -m bench [--quick]`: run every section, write bench/results/<date>[-quick].{md,json}.

A second run on the same day writes `<date>-2`, then `-3`: never over an earlier report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import timeit
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import free_stem, judge, render
from bench.scratch import CHOICES, scratch_root
from bench.suite import Bench, make_plan

RESULTS = Path(__file__).resolve().parent / "results"


def _output(*args: str) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return proc.stdout.decode(errors="replace").strip() or "?"


def _uncommitted() -> str:
    """A mark for changes to tracked files (earlier runs' untracked results are not code)."""
    changed = _output("git", "status", "--porcelain", "--untracked-files=no")
    return " (+ uncommitted changes)" if changed != "?" else ""


def python_loop_us() -> float:
    """A fixed pure-Python loop's best time (µs): a slowed or different host shows here first."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def environment(loop_before: float) -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": _output("sh", "-c", "free -m | awk '/Mem:/ {print $2 \" MB\"}'"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python loop": f"sum(range(1000)) {loop_before:.1f} µs before the run, "
        f"{python_loop_us():.1f} µs after (best of 5; compare runs by it)",
        "postfix": _output("postconf", "-dh", "mail_version"),
        "postgresql": _output("/usr/lib/postgresql/15/bin/postgres", "--version"),
        "commit": _output("git", "rev-parse", "--short", "HEAD")
        + _uncommitted(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small counts, no 25 MB point, no 10^6 scale point (~3 minutes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--scratch", choices=CHOICES, default="ext4",
                        help="where the servers' data lives: a fresh ext4 image (default) or "
                        "a directory under $TMPDIR (bench/scratch.py)")
    parser.add_argument("--only", default=None, metavar="SECTION,...",
                        help=f"run only these sections ({', '.join(Bench.SECTIONS)})")
    args = parser.parse_args(argv)
    only = None if args.only is None else frozenset(args.only.split(","))
    if only is not None and not only <= set(Bench.SECTIONS):
        parser.error(f"--only: unknown section(s) {', '.join(sorted(only - set(Bench.SECTIONS)))}")
    started = time.monotonic()
    loop_before = python_loop_us()
    with scratch_root("gateway-bench-", args.scratch, args.keep) as scratch:
        results = Bench(make_plan(args.quick), scratch.root, only).run()
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "command": ("make bench" if not args.quick else ".venv/bin/python -m bench --quick")
        + (f" --only {args.only}" if only else ""),
        "environment": {**environment(loop_before), "scratch": scratch.description},
        "duration_s": round(time.monotonic() - started, 1),
        **asdict(results),
    }
    data["targets"] = judge(data)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = free_stem(args.out, now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "") + (
        "-" + "-".join(sorted(only)) if only else ""))
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (args.out / f"{stem}.md").write_text(render(data))
    print(f"wrote {args.out / stem}.md and .json in {data['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
