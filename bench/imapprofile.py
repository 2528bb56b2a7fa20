"""`python -m bench.imapprofile`: the IMAP pull-and-strip alone, quickly, optionally under py-spy.

Not part of `make bench`: the tool for working on the IMAP adapter.  Sets up
what the bench's IMAP section sets up (DNS, relay sink, court key, a code
asked through a running `gateway serve`), seeds a Dovecot mailbox with COUNT
messages of 100 KB, then runs `gateway imap pull --once` and prints its rate
and its CPU per message (utime + stime of the pull process).  With
`--py-spy FILE` the pull runs under `py-spy record` (raw format for
`python -m bench.stacks` when FILE ends in .txt); with `--importtime FILE`
under `python -X importtime`, what its start imports.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.client import PLACEHOLDER, unique_id
from bench.gatewayproc import (
    DOMAIN,
    GATEWAY_PYTHON,
    SELECTOR,
    SENDER,
    SENDER_DOMAIN,
    GatewayInstance,
)
from bench.imapbench import _mailbox_config
from bench.messages import write_templates
from bench.scratch import CHOICES, scratch_root
from bench.suite import MEASURES, Bench, make_plan
from tests.fixtures.dovecot import Dovecot
from tests.fixtures.gpgkeys import generate_court_keypair, kill_agent, make_gnupghome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imapprofile", description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", default="100KB", choices=["5KB", "100KB"])
    parser.add_argument("--py-spy", type=Path, default=None, help="record the pull into FILE")
    parser.add_argument("--gil", action="store_true", help="py-spy --gil (the lock's holder)")
    parser.add_argument("--importtime", type=Path, default=None,
                        help="run the pull with -X importtime, its report into FILE")
    parser.add_argument("--scratch", choices=CHOICES, default="ext4",
                        help="where the servers' data lives (bench/scratch.py)")
    args = parser.parse_args(argv)
    with scratch_root("gateway-imapprofile-", args.scratch) as scratch:
        return _run(args, scratch.root)


def _run(args: argparse.Namespace, root: Path) -> int:
    bench = Bench(make_plan(True), root)
    bench.dns.start()
    bench.sink.start()
    server = Dovecot()
    try:
        home = make_gnupghome(root)
        try:
            _fingerprint, armored = generate_court_keypair(home)
        finally:
            kill_agent(home)
        bench.dns.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [bench.dkim.txt_record]
        instance = GatewayInstance(root / "gw", bench.dns, bench.sink, bench.dkim)
        instance.setup(armored, MEASURES)
        instance.start()
        try:
            code = instance.request_codes(MEASURES[:1])[0]
        finally:
            instance.stop()
        template = write_templates(
            root / "templates", [args.size], sender=SENDER, to=f"depot@{DOMAIN}",
            domain=SENDER_DOMAIN, selector=SELECTOR, key=bench.dkim, subject=f"Depot {code}",
            prefix="imap-")[args.size]
        raw = template.read_bytes()
        server.start()
        server.write_maildir([raw.replace(PLACEHOLDER, unique_id("imap", i))
                              for i in range(args.count)])
        with instance.config.open("a") as handle:
            handle.write(_mailbox_config(server))
        flags = ["-X", "importtime"] if args.importtime is not None else []
        command = [GATEWAY_PYTHON, *flags, "-m", "gateway", "--config", str(instance.config),
                   "imap", "pull", "--once"]
        if args.py_spy is not None:
            fmt = {".json": "speedscope", ".txt": "raw"}.get(args.py_spy.suffix, "flamegraph")
            exe = Path(sys.executable).parent / "py-spy"
            command = [str(exe) if exe.exists() else "py-spy", "record", "--rate", "200",
                       "--format", fmt, "-o", str(args.py_spy), "--subprocesses",
                       *(["--gil"] if args.gil else []), "--", *command]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, env=instance.env(), check=False)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if args.importtime is not None:
            args.importtime.write_bytes(proc.stderr)
        if proc.returncode != 0:
            print(proc.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
            return 1
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(json.dumps({
            "messages": args.count, "size": args.size, "seconds": round(seconds, 2),
            "msgs_per_s": round(args.count / seconds, 1),
            "cpu_ms_per_msg": round(cpu / args.count * 1000, 2),
            "user_ms_per_msg": round((after.ru_utime - before.ru_utime) / args.count * 1000, 2),
            "output": proc.stdout.decode(errors="replace")[-200:],
        }))
    finally:
        server.stop()
        bench.sink.close()
        bench.dns.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
