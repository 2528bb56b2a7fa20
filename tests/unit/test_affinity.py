"""Which CPU a gateway process keeps to (`gateway.affinity.choose_cpu`)."""

from __future__ import annotations

import os

import pytest

from gateway.affinity import choose_cpu, current_cpu


def test_one_cpu_or_none_leaves_nothing_to_choose() -> None:
    assert choose_cpu(set(), None, None) is None
    assert choose_cpu({3}, None, 3) is None
    assert choose_cpu({3}, 2, 3) is None


def test_without_an_index_the_cpu_it_runs_on() -> None:
    assert choose_cpu({0, 1, 2, 3}, None, 2) == 2
    assert choose_cpu({4, 6}, None, 1) == 4  # not one it may use: the first it may
    assert choose_cpu({4, 6}, None, None) == 4


def test_an_index_counts_the_allowed_cpus_in_order_and_wraps() -> None:
    allowed = {6, 2, 4}
    assert [choose_cpu(allowed, i, 6) for i in range(5)] == [2, 4, 6, 2, 4]


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_current_cpu_is_one_this_process_may_use() -> None:
    assert current_cpu() in os.sched_getaffinity(0)
