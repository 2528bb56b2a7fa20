"""The results file: targets judged from the run's own ratios, tables in Markdown, raw JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.stats import fmt, ratio

Row = dict[str, Any]
STAGE_ORDER = ("parse", "dkim", "code", "documents", "encrypt", "blob_write", "commit", "handle")


def find(points: list[Row], target: str, size: str, sessions: int) -> Row | None:
    for point in points:
        if (point["target"], point["size_label"], point["sessions"]) == (target, size, sessions):
            result: Row = point["result"]
            return result
    return None


def _rate(points: list[Row], target: str, size: str, sessions: int) -> float | None:
    found = find(points, target, size, sessions)
    return None if found is None else found.get("msgs_per_s")


def _cpu(points: list[Row], target: str, size: str, sessions: int) -> float | None:
    """Server CPU per accepted message up to the end of its deferred work (receipts)."""
    found = find(points, target, size, sessions)
    return None if found is None else found.get("server_cpu_ms_per_msg")


def _delivered(points: list[Row], size: str) -> float | None:
    found = find(points, "peer", size, 20)
    return None if found is None else found.get("delivered_per_s")


CPU_LIMITS = {"5KB": 5.0, "100KB": 9.0}
"""Issue 19, target 1: server CPU per accepted message (ms), receipt included, one process."""


def judge(results: Row) -> list[Row]:
    """Each target of issue 19: measured value, threshold, verdict (None when not measured)."""
    points, sections = results["points"], results["sections"]
    out: list[Row] = []

    def add(name: str, value: float | None, threshold: float, higher_is_better: bool) -> None:
        verdict = None if value is None else (
            value >= threshold if higher_is_better else value <= threshold)
        out.append({"target": name, "value": value, "threshold": threshold, "pass": verdict})

    for size, limit in CPU_LIMITS.items():
        add(f"server CPU ms per accepted message, receipt included, 1 process, {size}, "
            "20 sessions", _cpu(points, "gateway-sqlite", size, 20), limit, False)
    add("gateway (1 process) / aiosmtpd discard, 100KB, 20 sessions",
        ratio(_rate(points, "gateway-sqlite", "100KB", 20),
              _rate(points, "aiosmtpd-discard", "100KB", 20)), 0.5, True)
    add("gateway --workers 2 / Postfix durable, 100KB, 20 sessions",
        ratio(_rate(points, "gateway-sqlite-w2", "100KB", 20),
              _rate(points, "postfix", "100KB", 20)), 0.5, True)
    for size in ("5KB", "100KB"):
        add(f"gateway (1 process) / peer's encrypted deliveries, {size}, 20 sessions",
            ratio(_rate(points, "gateway-sqlite", size, 20), _delivered(points, size)), 2.0,
            True)
    imap = sections.get("imap") or {}
    add("IMAP pull-and-strip / the gateway's SMTP accept (100KB, 20 sessions)",
        ratio(imap.get("pull_msgs_per_s"), _rate(points, "gateway-sqlite", "100KB", 20)),
        0.8, True)
    half = find(points, "gateway-sqlite@half", "100KB", 20)
    floor = sections.get("disk_floor")
    add("p99 accept latency at half the maximum rate (ms)" + (
        "" if not floor else f"; the disk alone, the same syncs at that rate: p99 "
        f"{fmt(floor['p99_ms'])} ms (p50 {fmt(floor['p50_ms'])}, max {fmt(floor['max_ms'])})"),
        None if half is None else half.get("p99_ms"), 250, False)
    big = find(points, "gateway-sqlite", "25MB", 4)
    add("25 MB x 4 at once: peak RSS above idle (MB)",
        None if big is None else big["peak_rss_mb"] - big["idle_rss_mb"], 4 * 25 * 4, False)
    cases = sections.get("scale") or []
    value = None
    if len(cases) >= 2:
        value = ratio(cases[-1]["point"].get("msgs_per_s"), cases[0]["point"].get("msgs_per_s"))
    label = "largest store" if not cases else f"{cases[-1]['submissions']:,} stored"
    add(f"accept rate, {label} / 1,000 stored", value, 0.9, True)
    return out


def _cpu_table(points: list[Row]) -> list[str]:
    """The gateway's CPU per message against the discard server's, point by point."""
    lines = ["| server | size | sessions | CPU ms/msg (load / +receipts) | discard CPU ms/msg "
             "| ratio | target |", "|---|---|---:|---:|---:|---:|---:|"]
    for point in points:
        if point["target"] not in ("gateway-sqlite", "gateway-pg", *VARIANTS):
            continue
        res, size, sessions = point["result"], point["size_label"], point["sessions"]
        dis = _cpu(points, "aiosmtpd-discard", size, sessions)
        cpu = res.get("server_cpu_ms_per_msg")
        limit = CPU_LIMITS.get(size) if point["target"] == "gateway-sqlite" else None
        lines.append(f"| {point['target']} | {size} | {sessions} "
                     f"| {fmt(res.get('server_cpu_load_ms_per_msg'))} / {fmt(cpu)} "
                     f"| {fmt(dis)} | {fmt(ratio(cpu, dis), 1)} | {fmt(limit)} |")
    return lines


def _peer_table(points: list[Row]) -> list[str]:
    rows = [p for p in points if p["target"] == "peer"]
    if not rows:
        return ["Not run."]
    lines = ["| size | sessions | peer accepts msg/s | peer delivers encrypted msg/s "
             "| peer CPU ms/msg | gateway msg/s | gateway CPU ms/msg | gateway / peer delivered |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for point in rows:
        res, size, sessions = point["result"], point["size_label"], point["sessions"]
        gw = _rate(points, "gateway-sqlite", size, sessions)
        lines.append(f"| {size} | {sessions} | {fmt(res.get('msgs_per_s'))} "
                     f"| {fmt(res.get('delivered_per_s'))} "
                     f"| {fmt(res.get('server_cpu_ms_per_msg'))} | {fmt(gw)} "
                     f"| {fmt(_cpu(points, 'gateway-sqlite', size, sessions))} "
                     f"| {fmt(ratio(gw, res.get('delivered_per_s')), 2)} |")
    return lines


VARIANTS = {
    "gateway-sqlite-op": "serve --outbox-process (1 SMTP process + 1 outbox process)",
    "gateway-sqlite-w2": "serve --workers 2",
    "gateway-sqlite-w2-op": "serve --workers 2 --outbox-process",
}


def _variant_table(points: list[Row]) -> list[str]:
    lines = ["| configuration | size | sessions | msg/s | /discard | /Postfix |",
             "|---|---|---:|---:|---:|---:|"]
    for point in points:
        if point["target"] not in VARIANTS:
            continue
        size, sessions = point["size_label"], point["sessions"]
        rate = point["result"].get("msgs_per_s")
        dis = _rate(points, "aiosmtpd-discard", size, sessions)
        pfx = _rate(points, "postfix", size, sessions)
        lines.append(f"| {VARIANTS[point['target']]} | {size} | {sessions} | {fmt(rate)} "
                     f"| {fmt(ratio(rate, dis), 2)} | {fmt(ratio(rate, pfx), 2)} |")
    return lines


def _non_negative(value: float | None) -> float | None:
    """None for a CPU figure below zero (processes of the tree exited during the point)."""
    return None if value is None or value < 0 else value


def _points_table(points: list[Row]) -> list[str]:
    lines = [
        "| server | size | sessions | msgs ok | msg/s | p50 ms | p95 ms | p99 ms "
        "| server CPU ms/msg (load / +deferred) | DB CPU ms/msg | idle RSS MB | peak RSS MB "
        "| client CPU ms/msg | not 250 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for point in points:
        res = point["result"]
        db_cpu = _non_negative(res.get("db_cpu_ms_per_msg"))
        bad = {k: v for k, v in res.get("replies", {}).items() if k != "250"}
        lines.append(
            f"| {point['target']} | {point['size_label']} | {point['sessions']} | {res['ok']} "
            f"| {fmt(res.get('msgs_per_s'))} | {fmt(res.get('p50_ms'))} "
            f"| {fmt(res.get('p95_ms'))} | {fmt(res.get('p99_ms'))} "
            f"| {fmt(res.get('server_cpu_load_ms_per_msg'))} / "
            f"{fmt(res.get('server_cpu_ms_per_msg'))} | {fmt(db_cpu)} "
            f"| {fmt(res.get('idle_rss_mb'))} | {fmt(res.get('peak_rss_mb'))} "
            f"| {fmt(res.get('client_cpu_ms_per_msg'), 2)} | {bad or ''} |"
        )
    return lines


def _ratio_table(points: list[Row]) -> list[str]:
    lines = ["| size | sessions | gateway msg/s | discard msg/s | Postfix msg/s "
             "| gateway/discard | gateway/Postfix | gateway-pg/Postfix |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for point in points:
        if point["target"] != "gateway-sqlite":
            continue
        size, sessions = point["size_label"], point["sessions"]
        gw = point["result"].get("msgs_per_s")
        dis = _rate(points, "aiosmtpd-discard", size, sessions)
        pfx = _rate(points, "postfix", size, sessions)
        pg = _rate(points, "gateway-pg", size, sessions)
        lines.append(f"| {size} | {sessions} | {fmt(gw)} | {fmt(dis)} | {fmt(pfx)} "
                     f"| {fmt(ratio(gw, dis), 2)} | {fmt(ratio(gw, pfx), 2)} "
                     f"| {fmt(ratio(pg, pfx), 2)} |")
    return lines


def _stage_table(points: list[Row]) -> list[str]:
    with_stages = [p for p in points if p["result"].get("stages")]
    if not with_stages:
        return ["No `gateway_stage_seconds` histogram on /metrics: stage timing not available."]
    stages = [s for s in STAGE_ORDER if any(s in p["result"]["stages"] for p in with_stages)]
    stages += sorted({s for p in with_stages for s in p["result"]["stages"]} - set(stages))
    lines = ["| server | size | sessions | " + " | ".join(stages) + " | messages per commit |",
             "|---|---|---:|" + "---:|" * (len(stages) + 1)]
    for point in with_stages:
        res = point["result"]
        cells = []
        for stage in stages:
            found = res["stages"].get(stage)
            # Per message: a stage run several times per message (3 blobs) counts in full.
            cells.append("-" if not found or not res["ok"] else
                         fmt(found["mean_ms"] * found["count"] / res["ok"], 2))
        cells.append(fmt(res.get("commit_batch_mean"), 1))
        lines.append(f"| {point['target']} | {point['size_label']} | {point['sessions']} | "
                     + " | ".join(cells) + " |")
    return lines


def _scale_lines(cases: list[Row]) -> list[str]:
    if not cases:
        return ["Not run."]
    lines = ["| registrations | stored submissions | rows inserted | insert s | msg/s (5KB, 20) "
             "| p99 ms | code stage ms/msg | direct code lookup µs (mean / p99) |",
             "|---:|---:|---|---:|---:|---:|---:|---|"]
    for case in cases:
        res = case["point"]
        code = (res.get("stages") or {}).get("code")
        lookup = case["direct_lookup"]
        lines.append(
            f"| {case['registrations']:,} | {case['submissions']:,} | {case['rows']} "
            f"| {case['insert_s']} | {fmt(res.get('msgs_per_s'))} | {fmt(res.get('p99_ms'))} "
            f"| {fmt(code['mean_ms'] if code else None, 2)} "
            f"| {lookup['mean_us']} / {lookup['p99_us']} |")
    return lines


def render(results: Row) -> str:
    env, sections = results["environment"], results["sections"]
    targets = judge(results)
    lines = [f"# Benchmark {results['date']} ({'quick' if results['quick'] else 'full'})", "",
             f"Reproduce: `{results['command']}` (from the repository root; as root).", "",
             "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in env.items()]
    lines += ["- Client, server, DNS and relay sink share the machine's cores: the client runs "
              "in its own process; its CPU per message is in the table.", "",
              "## Targets (ratios within this run)", "",
              "| target | measured | threshold | verdict |", "|---|---:|---:|---|"]
    for item in targets:
        verdict = {None: "not measured", True: "PASS", False: "FAIL"}[item["pass"]]
        lines.append(f"| {item['target']} | {fmt(item['value'], 2)} | {item['threshold']} "
                     f"| {verdict} |")
    lines += ["", "## SMTP accept: gateway against aiosmtpd discard and Postfix", ""]
    lines += _ratio_table(results["points"])
    lines += ["", "Other ways to run it (the targets above are judged on plain `serve` and "
              "`serve --workers 2`):", "", *_variant_table(results["points"])]
    lines += ["", "## Server CPU per accepted message against the discard server", "",
              "Receipts included (the CPU up to the last receipt relayed).", "",
              *_cpu_table(results["points"])]
    lines += ["", "## The peer: Postfix + OpenDKIM (milter) + a gpg filter to a maildir", "",
              "Postfix answers 250 after its queue fsync, before encryption; the target is on "
              "the rate of encrypted, fsync'd files in the maildir. Its CPU counts Postfix's "
              "processes, the filter's gpg runs (reaped children) and OpenDKIM.", "",
              *_peer_table(results["points"])]
    lines += ["", "## Every point", "",
              "Server CPU: during the load / up to the end of its deferred work (the gateway's "
              "receipts relayed, Postfix's maildir deliveries). RSS is summed over the server's "
              "processes, so shared pages count once per process (Postfix: many processes).", "",
              *_points_table(results["points"])]
    lines += ["", "## Where the time goes (ms per message, from /metrics deltas)", "",
              "Under concurrency a stage's time includes waiting for a worker thread "
              "and the GIL; `commit` includes the wait for the batch's group commit "
              "(messages per commit: the mean batch).", ""]
    lines += _stage_table(results["points"])
    lines += ["", "## Scale (SQLite, synthetic rows under a court of their own)", ""]
    lines += _scale_lines(sections.get("scale") or [])
    imap = sections.get("imap") or {"skipped": "not run"}
    lines += ["", "## IMAP pull-and-strip", ""]
    if "skipped" in imap:
        lines.append(f"Skipped: {imap['skipped']}")
    else:
        smtp = _rate(results["points"], "gateway-sqlite", "100KB", 20)
        lines.append(f"{imap['messages']} messages of 100 KB: `gateway imap pull --once` "
                     f"{imap['pull_msgs_per_s']} msg/s against the gateway's SMTP accept of "
                     f"{fmt(smtp)} msg/s (100KB, 20 sessions): ratio "
                     f"{fmt(ratio(imap.get('pull_msgs_per_s'), smtp), 2)}. The plain imaplib "
                     f"fetch, the protocol's ceiling: {imap['plain_msgs_per_s']} msg/s "
                     f"(pull / fetch {imap['ratio']}).")
    lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    lines.append(f"- Section durations (s): {sections.get('durations_s')}")
    return "\n".join(lines) + "\n"


def free_stem(folder: Path, stem: str) -> str:
    """`stem`, or `stem-2`, `stem-3` … : the first name no earlier run's .md or .json has, so
    a second run on the same day never overwrites the first one's report."""
    candidate, n = stem, 1
    while (folder / f"{candidate}.md").exists() or (folder / f"{candidate}.json").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate
