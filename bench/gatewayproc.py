"""A real `gateway serve` as a subprocess: set up through the CLI, codes fetched through codes@."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from bench.messages import SIGNED_HEADERS
from tests.fixtures.dkimkeys import DkimKey, sign
from tests.fixtures.dnsserver import DnsServer
from tests.fixtures.smtpsink import SmtpSink

DOMAIN = "greffe.example"
SENDER_DOMAIN = "exemple.fr"
SENDER = f"tuteur@{SENDER_DOMAIN}"
SELECTOR = "s1"
COURT = "TJ-BENCH"
CODE_RE = re.compile(rb"\b([0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5})\b")


GATEWAY_PYTHON = os.environ.get("BENCH_GATEWAY_PYTHON") or sys.executable
"""The interpreter whose `gateway` is measured: another worktree's venv for a before/after."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_supports(option: str, *command: str) -> bool:
    """Whether `gateway <command> --help` exists and mentions option."""
    proc = subprocess.run(
        [GATEWAY_PYTHON, "-m", "gateway", *command, "--help"], capture_output=True, check=False,
        cwd="/",  # not the checkout: `-m` would import its gateway/, not GATEWAY_PYTHON's
    )
    return proc.returncode == 0 and option.encode() in proc.stdout


@cache
def legacy() -> bool:
    """The pre-composition-root gateway (b755a7a): no relay.mode, no registration notices."""
    return not cli_supports("--no-notices", "registrations", "import")


@dataclass
class GatewayInstance:
    """One data directory and database; `start`/`stop` a serve process on it."""

    root: Path
    dns: DnsServer
    sink: SmtpSink
    dkim: DkimKey
    db_url: str | None = None
    smtp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "gateway.toml"

    def env(self) -> dict[str, str]:
        overrides = {
            "GATEWAY__SMTP__LISTEN": f"127.0.0.1:{self.smtp_port}",
            "GATEWAY__SMTP__SUBMISSION_LISTEN": f"127.0.0.1:{free_port()}",
            "GATEWAY__HTTP__LISTEN": f"127.0.0.1:{self.http_port}",
            "GATEWAY__DNS__NAMESERVERS": f'["{self.dns.address}"]',
            "GATEWAY__RELAY__HOST": "127.0.0.1",
            "GATEWAY__RELAY__PORT": str(self.sink.port),
            "GATEWAY__LOGGING__LEVEL": "WARNING",
            # A benchmark is one client sending a lot: lift the per-client throttles.
            "GATEWAY__SMTP__MAX_MESSAGES_PER_CLIENT": "100000000",
            "GATEWAY__SMTP__CLIENT_WINDOW": "1s",
            "GATEWAY__SMTP__MAX_CONNECTIONS_PER_CLIENT": "200",
            "GATEWAY__SMTP__MAX_CONNECTIONS": "400",
            "GATEWAY__SMTP__MAX_COMMANDS": "10000000",
            "GATEWAY__CODES__MAX_REQUESTS_PER_DAY": "100000",
            "GATEWAY__LIMITS__DISK_RESERVE_BYTES": "0",
        }
        if not legacy():
            overrides["GATEWAY__RELAY__MODE"] = "smtp"  # `init` writes "capture"; the bench relays
        if self.db_url:
            overrides["GATEWAY__DATABASE__URL"] = self.db_url
        # As installed, the gateway's bytecode is compiled once: with this variable
        # (set on some machines) every start compiles every module again (~1 s).
        inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return {**inherited, **overrides}

    def cli(self, *args: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            [GATEWAY_PYTHON, "-m", "gateway", "--config", str(self.config), *args],
            input=stdin, capture_output=True, env=self.env(), check=False, cwd=self.root,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gateway {' '.join(args)}: {proc.stderr.decode()[-2000:]}")
        return proc.stdout.decode()

    def setup(self, court_key_armored: str, measures: list[str]) -> None:
        """init, one court with its key, one registration per measure for the bench sender."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.cli("init")
        self.cli("courts", "add", COURT, "--name", "Tribunal de banc d'essai")
        key_file = self.root / "court.asc"
        key_file.write_text(court_key_armored)
        self.cli("courts", "add-key", COURT, str(key_file))
        csv_file = self.root / "registrations.csv"
        lines = ["court,measure,address", *(f"{COURT},{m},{SENDER}" for m in measures)]
        csv_file.write_text("\n".join(lines) + "\n")
        # No registration notices: they would compete with the measured mail for the outbox.
        notices = [] if legacy() else ["--no-notices"]
        self.cli("registrations", "import", *notices, str(csv_file))
        self.dns.records[f"{SELECTOR}._domainkey.{SENDER_DOMAIN}"] = [self.dkim.txt_record]

    def start(self, workers: int = 1, outbox_process: bool = False) -> None:
        args = [GATEWAY_PYTHON, "-m", "gateway", "--config", str(self.config), "serve"]
        if workers > 1:
            args += ["--workers", str(workers)]
        if outbox_process:
            args.append("--outbox-process")
        log = (self.root / "serve.log").open("ab")
        self.proc = subprocess.Popen(args, env=self.env(), stdout=log, stderr=log, cwd=self.root)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway serve exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1) as s:
                    if s.recv(100).startswith(b"220"):
                        # let every worker listen (spawned children take longer)
                        time.sleep(0.5 if workers == 1 and not outbox_process else 2.0)
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway serve did not listen: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self) -> str:
        try:
            return (self.root / "serve.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def request_codes(self, measures: list[str]) -> list[str]:
        """Ask codes@ for one code per measure; read each from the mail the relay sink got."""
        codes = []
        for measure in measures:
            before = len(self.sink.messages)
            subject = f"CODE {COURT} {measure}"
            raw = self._signed(f"codes@{DOMAIN}", subject)
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as client:
                client.sendmail(SENDER, [f"codes@{DOMAIN}"], raw)
            codes.append(self._wait_code(before))
        return codes

    def _wait_code(self, before: int, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _sender, _rcpts, data in self.sink.messages[before:]:
                found = CODE_RE.search(data)
                if found:
                    return found.group(1).decode()
            time.sleep(0.05)
        raise RuntimeError(f"no code mail within {timeout}s: {self.log_tail()}")

    def _signed(self, to: str, subject: str) -> bytes:
        from email.message import EmailMessage
        from email.utils import formatdate, make_msgid

        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = SENDER, to, subject
        msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=SENDER_DOMAIN)
        msg.set_content("code\n")
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        return sign(raw, SELECTOR.encode(), SENDER_DOMAIN.encode(), self.dkim.private_pem,
                    SIGNED_HEADERS)

    def wait_outbox(self, expected_total: int, timeout: float) -> float:
        """Wait until the relay sink holds expected_total mails; seconds waited."""
        started = time.monotonic()
        while len(self.sink.messages) < expected_total:
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
        return time.monotonic() - started
