"""Prometheus text scraping: per-stage mean time per message between two scrapes."""

from __future__ import annotations

import re
import urllib.request

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_prometheus(text: str) -> Samples:
    """{(metric name, sorted labels): value} for every sample line."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
        try:
            samples[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            continue
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples | None:
    """The samples at url (an http:// URL the harness built), or None when it is not there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            return parse_prometheus(response.read().decode("utf-8", "replace"))
    except OSError:
        return None


def stage_means(before: Samples, after: Samples, metric: str = "gateway_stage_seconds") -> dict[
    str, dict[str, float]
]:
    """{stage: {"count": n, "mean_ms": ...}} of the histogram's growth between two scrapes."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in after.items():
        if name != f"{metric}_sum":
            continue
        stage = dict(labels).get("stage", "?")
        count_key = (f"{metric}_count", labels)
        d_sum = value - before.get((name, labels), 0.0)
        d_count = after.get(count_key, 0.0) - before.get(count_key, 0.0)
        if d_count > 0:
            out[stage] = {"count": d_count, "mean_ms": round(d_sum / d_count * 1000, 3)}
            p99 = _bucket_quantile(before, after, metric, labels, d_count, 0.99)
            if p99 is not None:
                out[stage]["p99_le_ms"] = p99
    return out


def _bucket_quantile(before: Samples, after: Samples, metric: str,
                     labels: tuple[tuple[str, str], ...], count: float,
                     q: float) -> float | None:
    """The smallest bucket bound (ms) holding a fraction q of the observations between scrapes."""
    bounds: list[tuple[float, float]] = []
    for (name, bucket_labels), value in after.items():
        if name != f"{metric}_bucket":
            continue
        rest = tuple(pair for pair in bucket_labels if pair[0] != "le")
        le = dict(bucket_labels).get("le")
        if rest != labels or le is None:
            continue
        grown = value - before.get((name, bucket_labels), 0.0)
        bounds.append((float(le), grown))
    for le, grown in sorted(bounds):
        if grown >= q * count:
            return round(le * 1000, 3) if le != float("inf") else None
    return None


def counter_delta(before: Samples, after: Samples, metric: str, label: str) -> dict[str, float]:
    """Growth of a labelled counter between two scrapes, by label value."""
    out: dict[str, float] = {}
    for (name, labels), value in after.items():
        if name in (metric, f"{metric}_total"):
            key = dict(labels).get(label, "?")
            out[key] = out.get(key, 0.0) + value - before.get((name, labels), 0.0)
    return out


def histogram_mean(before: Samples, after: Samples, metric: str) -> float | None:
    """Mean of an unlabelled histogram's observations between two scrapes (None: none)."""
    d_sum = after.get((f"{metric}_sum", ()), 0.0) - before.get((f"{metric}_sum", ()), 0.0)
    d_count = after.get((f"{metric}_count", ()), 0.0) - before.get((f"{metric}_count", ()), 0.0)
    return round(d_sum / d_count, 2) if d_count > 0 else None
