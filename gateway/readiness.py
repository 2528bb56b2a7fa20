"""Readiness: whether this process can take work now (database, blob store, disk, keys).

Each check is a name and a function returning "" when all is well, or what
is wrong in words safe to show an operator (no paths, no exception text).
`/readyz` runs them all and answers 503 naming the failing ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.model import Clock
from gateway.storage.blobstore import BlobStorage
from gateway.storage.db import Database

log = logging.getLogger("gateway.readiness")
Probe = Callable[[], str]


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    name: str
    probe: Probe


def run_checks(checks: Sequence[ReadinessCheck]) -> dict[str, str]:
    """name -> "ok" or the problem; a check that raises counts as failing, logged."""
    results: dict[str, str] = {}
    for check in checks:
        try:
            problem = check.probe()
        except GatewayError as exc:
            problem = exc.message
        except Exception:
            log.exception("readiness check %s failed", check.name)
            problem = "check failed (see the log)"
        results[check.name] = problem or "ok"
    return results


def database_reachable(db: Database) -> Probe:
    def probe() -> str:
        db.ping()
        return ""

    return probe


def blob_store_writable(blobs: BlobStorage, clock: Clock) -> Probe:
    """Write and delete an empty probe blob (not fsync'd: this checks access, not durability)."""

    def probe() -> str:
        key = blobs.new_key("raw", clock())
        try:
            blobs.write(key, b"", sync=False, sync_dir=False)
        finally:
            blobs.delete(key)
        return ""

    return probe


def disk_above_reserve(blobs: BlobStorage, reserve: int) -> Probe:
    def probe() -> str:
        free = blobs.free_bytes()
        return "" if free >= reserve else f"{free} bytes free, below the reserve of {reserve}"

    return probe


def keys_loaded(problem: str) -> Probe:
    """The outcome of loading the gateway's signing and DKIM keys when the server was built."""

    def probe() -> str:
        return problem

    return probe
