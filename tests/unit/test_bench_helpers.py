"""The bench harness's pure helpers: percentiles, /proc parsing, Prometheus deltas, SMTP framing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import diskfloor
from bench.client import PLACEHOLDER, dot_stuff, unique_id
from bench.metrics import counter_delta, parse_prometheus, stage_means
from bench.procstat import CLOCK_TICKS, parse_stat_cpu, parse_status_kb
from bench.report import free_stem
from bench.stats import latency_summary, percentile, ratio


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_percentile_of_nothing_is_none_and_range_is_checked() -> None:
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_reports_milliseconds() -> None:
    summary = latency_summary([0.001] * 98 + [0.5, 1.0])
    assert summary["p50_ms"] == 1.0
    assert summary["max_ms"] == 1000.0
    assert summary["p99_ms"] is not None and 500 <= summary["p99_ms"] <= 1000


def test_ratio_is_none_without_both_figures() -> None:
    assert ratio(5.0, 10.0) == 0.5
    assert ratio(None, 10.0) is None
    assert ratio(5.0, 0.0) is None


def test_stat_line_with_spaces_in_the_name() -> None:
    fields = ["S"] + ["0"] * 10 + [str(3 * CLOCK_TICKS), str(CLOCK_TICKS)] + ["0"] * 30
    line = "1234 (python -m x) " + " ".join(fields)
    assert parse_stat_cpu(line) == pytest.approx(4.0)


def test_reaped_children_count_only_when_asked() -> None:
    fields = (["S"] + ["0"] * 10 + [str(CLOCK_TICKS), "0", str(2 * CLOCK_TICKS),
                                    str(CLOCK_TICKS)] + ["0"] * 30)
    line = "99 (master) " + " ".join(fields)
    assert parse_stat_cpu(line) == pytest.approx(1.0)
    assert parse_stat_cpu(line, reaped=True) == pytest.approx(4.0)


def test_status_field_in_kb() -> None:
    text = "Name:\tpython\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n"
    assert parse_status_kb(text, "VmHWM") == 20480
    assert parse_status_kb(text, "VmSwap") is None


def test_stage_means_are_computed_from_the_growth_between_scrapes() -> None:
    before = parse_prometheus(
        '# HELP x\ngateway_stage_seconds_sum{stage="dkim"} 1.0\n'
        'gateway_stage_seconds_count{stage="dkim"} 10\n'
        'gateway_messages_total{outcome="accepted"} 10\n'
    )
    after = parse_prometheus(
        'gateway_stage_seconds_sum{stage="dkim"} 3.0\n'
        'gateway_stage_seconds_count{stage="dkim"} 20\n'
        'gateway_stage_seconds_sum{stage="commit"} 0.5\n'
        'gateway_stage_seconds_count{stage="commit"} 10\n'
        'gateway_messages_total{outcome="accepted"} 25\n'
    )
    assert stage_means(before, after) == {
        "dkim": {"count": 10, "mean_ms": 200.0},
        "commit": {"count": 10, "mean_ms": 50.0},
    }
    assert counter_delta(before, after, "gateway_messages", "outcome") == {"accepted": 15.0}


def test_stage_p99_is_the_bucket_bound_holding_99_percent_of_the_new_observations() -> None:
    def scrape(buckets: dict[str, int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = "".join(f'gateway_stage_seconds_bucket{{le="{le}",stage="commit"}} {n}\n'
                       for le, n in buckets.items())
        total = buckets["+Inf"]
        return parse_prometheus(text + f'gateway_stage_seconds_sum{{stage="commit"}} {total}\n'
                                f'gateway_stage_seconds_count{{stage="commit"}} {total}\n')

    before = scrape({"0.01": 50, "0.1": 50, "1.0": 50, "+Inf": 50})
    # 100 new: 98 under 10 ms, 1 under 100 ms, 1 under 1 s -> 99 % are under 100 ms.
    after = scrape({"0.01": 148, "0.1": 149, "1.0": 150, "+Inf": 150})
    assert stage_means(before, after)["commit"]["p99_le_ms"] == 100.0
    # Beyond the last finite bound: no figure rather than a wrong one.
    assert "p99_le_ms" not in stage_means(before, scrape(
        {"0.01": 50, "0.1": 50, "1.0": 50, "+Inf": 150}))["commit"]


def test_disk_floor_replays_each_message_syncs_and_reports_percentiles(tmp_path: Path) -> None:
    figures = diskfloor.replay(tmp_path, rate=1000.0, count=5, size=1000)
    assert set(figures) == {"rate", "count", "size", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert len(list((tmp_path / "blobs").iterdir())) == 15  # raw, document, manifest each


def test_dot_stuffing_and_end_marker() -> None:
    assert dot_stuff(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n.\r\n"


def test_unique_ids_keep_the_placeholder_length() -> None:
    first, second = unique_id("run", 1), unique_id("run", 2)
    assert len(first) == len(second) == len(PLACEHOLDER)
    assert first != second


def test_a_second_run_on_the_same_day_gets_the_next_free_name(tmp_path: Path) -> None:
    assert free_stem(tmp_path, "2026-12-07") == "2026-12-07"
    (tmp_path / "2026-12-07.md").write_text("first")
    assert free_stem(tmp_path, "2026-12-07") == "2026-12-07-2"
    (tmp_path / "2026-12-07-2.json").write_text("{}")  # either file of a run takes the name
    assert free_stem(tmp_path, "2026-12-07") == "2026-12-07-3"
    assert free_stem(tmp_path, "2026-12-07-quick") == "2026-12-07-quick"
