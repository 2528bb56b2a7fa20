"""Prometheus metrics: per-stage timings, message outcomes (served on /metrics by `gateway.api`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

Observe = Callable[[str, float], None]
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def no_observe(stage: str, seconds: float) -> None:
    """The observer used where nobody measures (unit tests, CLI commands)."""


@contextmanager
def timed(observe: Observe, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(stage, time.perf_counter() - started)


class Metrics:
    """The gateway's metrics in one registry (or the multi-process one under --workers)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.stage_seconds = Histogram(
            "gateway_stage_seconds",
            "Time spent in each stage of accepting a message",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self._stages: dict[str, Histogram] = {}
        self.messages = Counter(
            "gateway_messages_total",
            "Messages by outcome (accepted, duplicate, refused, tempfail)",
            ["outcome"],
            registry=self.registry,
        )
        self.commit_batch = Histogram(
            "gateway_commit_batch_messages",
            "Messages committed together by one group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.outbox_deliveries = Counter(
            "gateway_outbox_deliveries_total",
            "Outbox delivery attempts by result",
            ["result"],
            registry=self.registry,
        )
        # Every process reads the same figures from the database, so any of them (the
        # largest, under --workers) is the cluster's answer.
        self.check_last_success = Gauge(
            "gateway_check_last_success_timestamp",
            "When the latest consistency check completed (Unix time; 0: never)",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.check_problems = Gauge(
            "gateway_check_problems",
            "Problems the latest consistency check found",
            registry=self.registry,
            multiprocess_mode="max",
        )

    def set_check(self, completed_at: float, problems: int) -> None:
        """The latest check's result (from its recorded report, whichever node ran it)."""
        self.check_last_success.set(completed_at)
        self.check_problems.set(problems)

    def observe_stage(self, stage: str, seconds: float) -> None:
        # A message is timed through a dozen stages: the child of each label is kept
        # (`labels` returns the same one every time, after 5 µs of argument handling).
        child = self._stages.get(stage)
        if child is None:
            child = self._stages.setdefault(stage, self.stage_seconds.labels(stage=stage))
        child.observe(seconds)

    def observe_commit_batch(self, size: int) -> None:
        self.commit_batch.observe(size)

    def count_delivery(self, result: str) -> None:
        self.outbox_deliveries.labels(result=result).inc()

    def count_message(self, outcome: str) -> None:
        self.messages.labels(outcome=outcome).inc()


def multiprocess_registry() -> CollectorRegistry:
    """A registry that aggregates every worker's metrics (PROMETHEUS_MULTIPROC_DIR)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
