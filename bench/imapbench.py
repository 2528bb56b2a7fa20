"""IMAP section: `gateway imap pull --once` on a Dovecot mailbox against a plain imaplib fetch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.client import PLACEHOLDER, unique_id
from bench.gatewayproc import GatewayInstance, cli_supports
from tests.fixtures.dovecot import DOVECOT, Dovecot

BATCH = 100


def available() -> str | None:
    """None when `gateway imap pull --once` exists, else the reason it cannot run."""
    if not DOVECOT.exists():
        return f"{DOVECOT} missing (install dovecot-imapd)"
    if not cli_supports("--once", "imap", "pull"):
        return "not available yet: `gateway imap pull --once` does not exist in this tree"
    return None


def plain_fetch(server: Dovecot) -> tuple[int, float]:
    """Fetch every message's full body with imaplib in UID batches: (messages, seconds)."""
    started = time.perf_counter()
    fetched = 0
    with server.client() as client:
        status, data = client.uid("SEARCH", "ALL")
        uids = data[0].split() if status == "OK" and data and data[0] else []
        for start in range(0, len(uids), BATCH):
            batch = b",".join(uids[start : start + BATCH]).decode()
            status, items = client.uid("FETCH", batch, "(BODY.PEEK[])")
            fetched += sum(1 for item in items if isinstance(item, tuple))
    return fetched, time.perf_counter() - started


def _mailbox_config(server: Dovecot) -> str:
    return (
        "\n[[imap.mailboxes]]\n"
        'name = "bench"\nhost = "127.0.0.1"\n'
        f"port = {server.port}\n"
        'tls = "none"\n'
        f'username = "{server.user}"\npassword = "{server.password}"\n'
        'folders = ["INBOX"]\nmode = "ingest"\nallow_private = true\n'
    )


def run(gateway: GatewayInstance, template: Path, count: int) -> dict[str, Any]:
    """Seed two identical mailboxes, time the plain fetch on one and the gateway on the other."""
    reason = available()
    if reason:
        return {"skipped": reason}
    raw = template.read_bytes()
    messages = [raw.replace(PLACEHOLDER, unique_id("imap", i)) for i in range(count)]
    baseline, pulled = Dovecot(), Dovecot()
    try:
        for server in (baseline, pulled):
            server.start()
            server.write_maildir(messages)  # Dovecot indexes them at the first SELECT
        plain_n, plain_s = plain_fetch(baseline)
        with gateway.config.open("a") as handle:
            handle.write(_mailbox_config(pulled))
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "--config", str(gateway.config), "imap", "pull",
             "--once"],
            capture_output=True, env=gateway.env(), check=False,
        )
        pull_s = time.perf_counter() - started
        if proc.returncode != 0:
            return {"skipped": f"`gateway imap pull --once` failed: "
                               f"{proc.stderr.decode(errors='replace')[-300:]}"}
        plain_rate, pull_rate = plain_n / plain_s, count / pull_s
        return {
            "messages": count, "plain_s": round(plain_s, 2), "pull_s": round(pull_s, 2),
            "plain_msgs_per_s": round(plain_rate, 1), "pull_msgs_per_s": round(pull_rate, 1),
            "ratio": round(pull_rate / plain_rate, 3), "pull_output": proc.stdout.decode()[-300:],
        }
    finally:
        baseline.stop()
        pulled.stop()
