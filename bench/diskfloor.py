"""The disk's own latency floor for one accepted message: the gateway's syncs, nothing else.

    python -m bench.diskfloor [--dir DIR] [--rate 29] [--count 600] [--size 100000]

For each message, at an open-loop RATE (each one starts at its scheduled
time, or as soon as the one before is done), the syncs the gateway makes
before it answers `250`, one after the other, on the same file system:

1. the raw message's blob (SIZE bytes) written to a temporary name, fsync'd,
   renamed; then the document's blob (3/4 of SIZE) the same way;
2. the manifest blob (2 KB) written and fsync'd, then the blob directory
   fsync'd (the group commit's before-commit syncs);
3. one row inserted and committed in an SQLite database in WAL with
   `synchronous=FULL` (the commit's WAL sync).

The latency is from a message's scheduled start to its commit, so a stall
delays the messages queued behind it, as it does for the gateway's group
commit.  No parsing, no encryption, no interpreter lock shared with anything:
the p99 here is what the disk alone gives at that rate, the floor under the
gateway's p99 at the same rate (`make bench` reports both).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.stats import percentile


def _write(directory: Path, name: str, data: bytes) -> None:
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, directory / name)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replay(directory: Path, rate: float, count: int, size: int) -> dict[str, float]:
    """p50/p95/p99/max latency (ms) of `count` messages' syncs at `rate` msg/s in `directory`."""
    blobs = directory / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS submission (id INTEGER PRIMARY KEY, ref TEXT)")
    raw, document, manifest = os.urandom(size), os.urandom(size * 3 // 4), os.urandom(2048)
    latencies = []
    started = time.perf_counter()
    try:
        for index in range(count):
            scheduled = started + index / rate
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            _write(blobs, f"{index}.raw", raw)
            _write(blobs, f"{index}.doc", document)
            _write(blobs, f"{index}.manifest", manifest)
            _sync_directory(blobs)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO submission (ref) VALUES (?)", (f"S-{index:06d}",))
            db.execute("COMMIT")
            latencies.append((time.perf_counter() - scheduled) * 1000)
    finally:
        db.close()
    out: dict[str, float] = {"rate": round(rate, 2), "count": count, "size": size}
    for pct in (50, 95, 99, 100):
        value = percentile(latencies, pct)
        out["max_ms" if pct == 100 else f"p{pct}_ms"] = round(value or 0.0, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.diskfloor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="a folder on the file system to measure (default: a temporary one)")
    parser.add_argument("--rate", type=float, default=29.0)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diskfloor-", dir=args.dir) as tmp:
        print(json.dumps(replay(Path(tmp), args.rate, args.count, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
