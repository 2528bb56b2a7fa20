"""`python -m bench.profile`: one gateway point, quickly, optionally under py-spy.

Not part of `make bench`: the tool for working on the hot path.  It sets up
what the bench sets up (DNS, relay sink, court key, registrations, codes),
starts one `gateway serve`, sends a warm-up, then measures one point with the
bench's own client and prints the server's CPU per message (during the load,
and up to the last receipt relayed) and the per-stage table.  With
`--py-spy FILE` the measured point is recorded by `py-spy record --gil`
(install it in the venv: `pip install py-spy`) into a speedscope (.json),
collapsed-stack (.txt, for `python -m bench.stacks`) or SVG file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.gatewayproc import DOMAIN, SELECTOR, SENDER, SENDER_DOMAIN, GatewayInstance
from bench.load import measure
from bench.messages import write_templates
from bench.pg import DurableCluster
from bench.scratch import CHOICES, scratch_root
from bench.suite import MEASURES, Bench, make_plan
from tests.fixtures.gpgkeys import generate_court_keypair, kill_agent, make_gnupghome


def _pyspy(pid: int, out: Path, duration: int, native: bool,
           gil: bool) -> subprocess.Popen[bytes]:
    fmt = {".json": "speedscope", ".txt": "raw"}.get(out.suffix, "flamegraph")
    args = ["py-spy", "record", "--pid", str(pid), "--subprocesses",
            "--duration", str(duration), "--rate", "200", "--format", fmt, "-o", str(out)]
    if gil:
        args.append("--gil")
    if native:
        args.append("--native")
    exe = Path(sys.executable).parent / "py-spy"
    args[0] = str(exe) if exe.exists() else "py-spy"
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--size", default="5KB", choices=["5KB", "100KB", "1MB"])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--point", action="append", default=[], metavar="SIZE:SESSIONS",
                        help="measure these points instead of --size/--sessions (repeatable)")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--outbox-process", action="store_true")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL cluster")
    parser.add_argument("--py-spy", type=Path, default=None, help="record the point into FILE")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--on-cpu", action="store_true",
                        help="sample threads running on a CPU, not the GIL's holder: on a "
                        "loaded machine the holder is often descheduled, which skews --gil")
    parser.add_argument("--repeat", type=int, default=1, help="measure the point N times")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open-loop pacing at RATE msg/s (the latency target's half-rate "
                        "point) instead of sessions sending as fast as they can")
    parser.add_argument("--scratch", choices=CHOICES, default="ext4",
                        help="where the servers' data lives (bench/scratch.py)")
    args = parser.parse_args(argv)
    with scratch_root("gateway-profile-", args.scratch) as scratch:
        return _run(args, scratch.root)


def _run(args: argparse.Namespace, root: Path) -> int:
    points = [(size, int(n)) for size, n in (p.split(":") for p in args.point)] or [
        (args.size, args.sessions)]
    bench = Bench(make_plan(True), root)
    bench.dns.start()
    bench.sink.start()
    cluster = DurableCluster() if args.postgres else None
    try:
        home = make_gnupghome(root)
        try:
            _fingerprint, armored = generate_court_keypair(home)
        finally:
            kill_agent(home)
        bench.dns.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [bench.dkim.txt_record]
        templates = write_templates(root / "templates", sorted({s for s, _ in points}),
                                    sender=SENDER,
                                    to=f"depot@{DOMAIN}", domain=SENDER_DOMAIN,
                                    selector=SELECTOR, key=bench.dkim)
        url = None
        if cluster is not None:
            cluster.start()
            url = cluster.create_database()
        instance = GatewayInstance(root / "gw", bench.dns, bench.sink, bench.dkim, url)
        instance.setup(armored, MEASURES)
        instance.start(args.workers, args.outbox_process)
        try:
            target = bench._target("profile", instance)
            if args.workers > 1 or args.outbox_process:
                target.metrics_url = None
            for size, sessions in points:
                measure(target, templates[size], size, sessions, args.warmup)
            for size, sessions in [p for _ in range(args.repeat) for p in points]:
                spy = None
                if args.py_spy is not None:
                    spy = _pyspy(instance.proc.pid, args.py_spy, 600,  # type: ignore[union-attr]
                                 args.native, not args.on_cpu)
                    time.sleep(1.0)
                point = measure(target, templates[size], size, sessions, args.count, args.rate)
                if spy is not None:
                    spy.send_signal(2)  # SIGINT: py-spy writes what it has
                    _out, err = spy.communicate(timeout=120)
                    print(err.decode(errors="replace")[-500:], file=sys.stderr)
                res = point.result
                print(json.dumps({
                    "size": size, "sessions": sessions, "ok": res["ok"],
                    "msgs_per_s": res["msgs_per_s"], "p99_ms": res["p99_ms"],
                    "cpu_load_ms": res.get("server_cpu_load_ms_per_msg"),
                    "cpu_ms": res.get("server_cpu_ms_per_msg"),
                    "client_cpu_ms": res.get("client_cpu_ms_per_msg"),
                    "loadavg": res["loadavg_before"], "batch": res.get("commit_batch_mean"),
                    "replies": res["replies"], "samples": res["samples"],
                }))
                for stage, value in (res.get("stages") or {}).items():
                    p99 = value.get("p99_le_ms")
                    tail = f"  p99 <= {p99:g} ms" if p99 is not None else ""
                    print(f"  {stage:<12} {value['mean_ms']:8.2f} ms x{value['count']:.0f}{tail}")
        finally:
            instance.stop()
    finally:
        if cluster is not None:
            cluster.stop()
        bench.sink.close()
        bench.dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
