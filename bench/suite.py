"""The run: every section in order on one machine, every point appended to one result."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import diskfloor, imapbench, peer, scale
from bench.gatewayproc import (
    DOMAIN,
    SELECTOR,
    SENDER,
    SENDER_DOMAIN,
    GatewayInstance,
    cli_supports,
    free_port,
)
from bench.load import Point, Target, measure
from bench.messages import write_templates
from bench.pg import DurableCluster
from bench.postfix import PostfixInstance, ensure_installed
from tests.fixtures.dkimkeys import DkimKey, generate_key
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.gpgkeys import generate_court_keypair, kill_agent, make_gnupghome
from tests.fixtures.smtpsink import SmtpSink

MEASURES = [f"BENCH/{i:03d}" for i in range(20)]


@dataclass(frozen=True)
class Plan:
    quick: bool
    sizes: tuple[str, ...]
    counts: dict[str, int]
    sessions: dict[str, tuple[int, ...]]
    pg_sizes: tuple[str, ...]
    scale_cases: tuple[tuple[int, int], ...]
    """(registrations, submissions) per case, the first one being the reference."""
    scale_count: int
    imap_count: int
    outbox_timeout: float


def make_plan(quick: bool) -> Plan:
    if quick:
        return Plan(True, ("5KB", "100KB", "1MB"), {"5KB": 100, "100KB": 100, "1MB": 20},
                    {"5KB": (1, 20), "100KB": (1, 20), "1MB": (1, 20)}, ("5KB", "100KB"),
                    ((1_000, 1_000), (10_000, 100_000)), 100, 100, 60.0)
    return Plan(False, ("5KB", "100KB", "1MB", "25MB"),
                {"5KB": 2000, "100KB": 2000, "1MB": 300, "25MB": 8},
                {"5KB": (1, 20), "100KB": (1, 20), "1MB": (1, 20), "25MB": (1, 4)},
                ("5KB", "100KB"), ((1_000, 1_000), (100_000, 1_000_000)), 1000, 2000, 300.0)


@dataclass
class Results:
    points: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, point: Point) -> dict[str, Any]:
        row = asdict(point)
        self.points.append(row)
        res = point.result
        print(f"  {point.target:<14} {point.size_label:>6} x{point.sessions:<3} "
              f"{res.get('msgs_per_s')} msg/s p99 {res.get('p99_ms')} ms "
              f"replies {res.get('replies')}", flush=True)
        return row


class OutboxSettle:
    """After a gateway point: wait for its receipts at the relay (no point pays the last's debt)."""

    def __init__(self, instance: GatewayInstance, timeout: float) -> None:
        self.instance, self.timeout = instance, timeout
        self.before = len(instance.sink.messages)

    def __call__(self, ok: int) -> dict[str, Any]:
        expected = self.before + ok
        waited = self.instance.wait_outbox(expected, self.timeout)
        self.before = len(self.instance.sink.messages)
        return {"outbox_wait_s": round(waited, 2),
                "outbox_backlog": max(expected - self.before, 0)}


class MaildirSettle:
    """After a Postfix point: wait until every accepted message sits in the maildir.

    `delivery_wait_s` is how long after the end of the load the last one came:
    the delivery rate is the delivered messages over the load's time plus that.
    """

    def __init__(self, instance: PostfixInstance, timeout: float) -> None:
        self.instance, self.timeout, self.before = instance, timeout, instance.delivered()

    def __call__(self, ok: int) -> dict[str, Any]:
        count, waited = self.instance.wait_delivered(self.before + ok, self.timeout)
        delivered, self.before = count - self.before, count
        return {"delivered": delivered, "delivery_wait_s": round(waited, 2)}


class Bench:
    """Holds what the sections share: DNS, the relay sink, keys, templates."""

    def __init__(self, plan: Plan, root: Path, only: frozenset[str] | None = None) -> None:
        self.plan, self.root, self.results = plan, root, Results()
        self.only = only
        """The sections to run (`python -m bench --only`); all when None."""
        self.dns, self.sink = DnsServer(), SmtpSink()
        self.dkim: DkimKey = generate_key()
        self.court_armored = ""
        self.templates: dict[str, Path] = {}

    SECTIONS = ("discard", "postfix", "peer", "gateway", "postgres", "scale", "imap")

    def run(self) -> Results:
        self.dns.start()
        self.sink.start()
        try:
            self._prepare()
            for name, section in (("discard", self.discard), ("postfix", self.postfix),
                                  ("peer", self.peer),
                                  ("gateway", self.gateway_sqlite), ("postgres", self.gateway_pg),
                                  ("scale", self.scale), ("imap", self.imap)):
                if self.only is not None and name not in self.only:
                    continue
                print(f"== {name}", flush=True)
                self._guard(name, section)
        finally:
            self.sink.close()
            self.dns.stop()
        return self.results

    def _guard(self, name: str, section: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            section()
        except Exception as exc:  # one broken section must not lose the others' figures
            traceback.print_exc()
            self.results.notes.append(f"section {name} failed: {type(exc).__name__}: {exc}")
        self.results.sections.setdefault("durations_s", {})[name] = round(
            time.monotonic() - started, 1)

    def _prepare(self) -> None:
        home = make_gnupghome(self.root)
        try:
            _fingerprint, self.court_armored = generate_court_keypair(home)
        finally:
            kill_agent(home)
        self.dns.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [self.dkim.txt_record]
        self.templates = write_templates(
            self.root / "templates", list(self.plan.sizes), sender=SENDER,
            to=f"depot@{DOMAIN}", domain=SENDER_DOMAIN, selector=SELECTOR, key=self.dkim)

    def _sweep(self, target: Target, sizes: tuple[str, ...] | None = None,
               sessions: tuple[int, ...] | None = None) -> None:
        for size in sizes or self.plan.sizes:
            for count_sessions in sessions or self.plan.sessions[size]:
                count = self.plan.counts[size]
                if size == "25MB":
                    count = max(count * count_sessions // 4, 2 * count_sessions)
                self.results.add(measure(target, self.templates[size], size, count_sessions,
                                         count))

    # -- baselines ---------------------------------------------------------------
    def discard(self) -> None:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "bench.discard", "--port", str(port)],
                                stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError("discard server did not start")
            self._sweep(Target("aiosmtpd-discard", port, proc.pid, [f"depot@{DOMAIN}"], SENDER))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    def postfix(self) -> None:
        reason = ensure_installed()
        if reason:
            self.results.notes.append(f"postfix section skipped: {reason}")
            return
        instance = PostfixInstance(self.root / "postfix", free_port(), DOMAIN)
        instance.configure()
        instance.start()
        try:
            pid = instance.master_pid()

            settle = MaildirSettle(instance, self.plan.outbox_timeout)
            self._sweep(Target("postfix", instance.port, pid, [f"depot+ABCDE@{DOMAIN}"], SENDER,
                               settle=settle))
        finally:
            instance.stop()
            instance.cleanup()

    def peer(self) -> None:
        """Postfix + OpenDKIM + a gpg filter to a maildir (`bench/peer.py`): 5 KB and 100 KB."""
        reason = ensure_installed() or peer.ensure_installed()
        if reason:
            self.results.notes.append(f"peer section skipped: {reason}")
            return
        instance = peer.PeerInstance(self.root / "peer", free_port(), DOMAIN, free_port(),
                                     f"127.0.0.1@{self.dns.port}")
        instance.configure_peer(self.court_armored)
        instance.start()
        try:
            pid = instance.master_pid()
            extra = [instance.opendkim_pid] if instance.opendkim_pid else []
            settle = MaildirSettle(instance, self.plan.outbox_timeout)
            self._sweep(Target("peer", instance.port, pid, [f"depot@{DOMAIN}"], SENDER,
                               settle=settle, extra_pids=extra, reaped=True),
                        ("5KB", "100KB"), (20,))
        finally:
            instance.stop()
            instance.cleanup()

    # -- the gateway -----------------------------------------------------------------
    @contextmanager
    def _gateway(self, name: str, db_url: str | None = None,
                 workers: int = 1) -> Iterator[tuple[GatewayInstance, Target]]:
        instance = GatewayInstance(self.root / name, self.dns, self.sink, self.dkim, db_url)
        instance.setup(self.court_armored, MEASURES)
        instance.start(workers)
        try:
            yield instance, self._target(name, instance)
        finally:
            instance.stop()

    def _target(self, name: str, instance: GatewayInstance, aux: int | None = None) -> Target:
        codes = instance.request_codes(MEASURES)
        assert instance.proc is not None

        settle = OutboxSettle(instance, self.plan.outbox_timeout)
        return Target(name, instance.smtp_port, instance.proc.pid,
                      [f"depot+{code}@{DOMAIN}" for code in codes], SENDER,
                      metrics_url=f"http://127.0.0.1:{instance.http_port}/metrics",
                      settle=settle, aux_pid=aux)

    def gateway_sqlite(self) -> None:
        with self._gateway("gateway-sqlite") as (instance, target):
            self._sweep(target)
            self._half_rate(target)
            self.sqlite_instance = instance
        if not cli_supports("--workers", "serve"):
            self.results.notes.append("`gateway serve --workers` not available: skipped")
            return
        for name, workers, outbox_process in (("gateway-sqlite-w2", 2, False),
                                              ("gateway-sqlite-op", 1, True),
                                              ("gateway-sqlite-w2-op", 2, True)):
            instance.start(workers=workers, outbox_process=outbox_process)
            try:
                target = self._target(name, instance)
                target.metrics_url = None  # each process counts its own share
                self._sweep(target, ("5KB", "100KB"), (20,))
            finally:
                instance.stop()

    def _half_rate(self, target: Target) -> None:
        best = [p["result"].get("msgs_per_s") or 0 for p in self.results.points
                if p["target"] == target.name and p["size_label"] == "100KB"
                and p["sessions"] == 20]
        if not best or not best[0]:
            return
        rate = best[0] / 2
        count = max(int(rate * (15 if self.plan.quick else 60)), 100)
        target.name = f"{target.name}@half"
        self.results.add(measure(target, self.templates["100KB"], "100KB", 20, count, rate))
        target.name = target.name.removesuffix("@half")
        # The same syncs alone on the same file system at the same rate: the p99's floor.
        floor = self.root / "diskfloor"
        self.results.sections["disk_floor"] = diskfloor.replay(floor, rate, count, 100_000)
        shutil.rmtree(floor, ignore_errors=True)

    def gateway_pg(self) -> None:
        cluster = DurableCluster()
        cluster.start()
        try:
            url = cluster.create_database()
            instance = GatewayInstance(self.root / "gateway-pg", self.dns, self.sink, self.dkim,
                                       url)
            instance.setup(self.court_armored, MEASURES)
            instance.start()
            try:
                target = self._target("gateway-pg", instance, cluster.postmaster_pid())
                self._sweep(target, self.plan.pg_sizes)
            finally:
                instance.stop()
        finally:
            cluster.stop()

    # -- scale and IMAP ---------------------------------------------------------------
    def scale(self) -> None:
        cases = []
        for registrations, submissions in self.plan.scale_cases:
            name = f"scale-{submissions:.0e}".replace("+0", "").replace("+", "")
            instance = GatewayInstance(self.root / name, self.dns, self.sink, self.dkim)
            instance.setup(self.court_armored, MEASURES)
            url = f"sqlite:///{instance.root / 'var' / 'gateway.db'}"
            filled = scale.populate(url, registrations, submissions)
            lookup = scale.lookup_latency_us(url, filled.pop("sample"))
            instance.start()
            try:
                point = measure(self._target(name, instance), self.templates["5KB"], "5KB", 20,
                                self.plan.scale_count)
            finally:
                instance.stop()
            row = self.results.add(point)
            cases.append({"registrations": registrations, "submissions": submissions,
                          **filled, "direct_lookup": lookup, "point": row["result"]})
        self.results.sections["scale"] = cases

    def imap(self) -> None:
        instance = getattr(self, "sqlite_instance", None)
        if instance is None:
            self.results.sections["imap"] = {"skipped": "the SQLite gateway section failed"}
            return
        instance.start()
        try:
            code = instance.request_codes(MEASURES[:1])[0]
        finally:
            instance.stop()
        template = write_templates(
            self.root / "templates", ["100KB"], sender=SENDER, to=f"depot@{DOMAIN}",
            domain=SENDER_DOMAIN, selector=SELECTOR, key=self.dkim, subject=f"Depot {code}",
            prefix="imap-")["100KB"]
        self.results.sections["imap"] = imapbench.run(instance, template, self.plan.imap_count)
