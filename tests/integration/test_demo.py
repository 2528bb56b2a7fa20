"""`gateway demo` as a newcomer runs it: a subprocess that walks the whole flow and exits 0.

The demo's folder goes under a temporary folder of the test (TMPDIR), so the
check that no gpg-agent survives covers the court's and the gateway's homes.
That folder's path is kept short, as /tmp is: gpg-agent's sockets live in
the GnuPG homes, and a Unix socket's path holds at most 107 bytes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.demo.flow import STEPS
from tests.fixtures.gpgkeys import wait_for_no_daemons_under

pytestmark = pytest.mark.gpg

REPO = Path(__file__).resolve().parents[2]


def run(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` in a clean environment: no GATEWAY* variable of ours leaks in."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=folder,
        env={**clean, "TMPDIR": str(folder), "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def short_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short temporary folder (`/tmp/pytest-of-<user>/pytest-<n>/d0`) for TMPDIR."""
    return tmp_path_factory.mktemp("d")


def demo_folders(short_tmp: Path) -> list[Path]:
    return sorted(short_tmp.glob("gateway-demo-*"))


def test_demo_walks_every_step_and_exits_0_within_a_minute(short_tmp: Path) -> None:
    started = time.monotonic()
    result = run(short_tmp, "demo")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60, f"the demo took {elapsed:.0f} s"
    out = result.stdout
    headings = re.findall(r"^\s*\d+/\d+ ([a-z-]+):", out, flags=re.MULTILINE)
    assert headings == list(STEPS)
    assert "S: 250 2.0.0 Message accepted" in out  # codes@, the real reply
    assert re.search(r"S: 250 2\.0\.0 Accepted TJ-DEMO-\d{4}-000001/1", out)
    assert re.search(r"\| Numéro de saisie : [0-9A-Z]{5}-[0-9A-Z]{5}", out)
    assert "signature good" in out
    sent = re.search(r"compte-de-gestion-2025\.pdf: \d+ bytes, SHA-256 ([0-9a-f]{64})", out)
    exported = re.search(r"01-compte-de-gestion-2025\.pdf: SHA-256 ([0-9a-f]{64})", out)
    assert sent and exported and sent.group(1) == exported.group(1)
    assert "every step held" in out
    assert "relay.mode is CAPTURE" in result.stderr  # serve's warning at start
    assert demo_folders(short_tmp) == []  # removed without --keep
    assert wait_for_no_daemons_under(short_tmp) == []


def test_demo_keep_leaves_a_folder_the_cli_explores(short_tmp: Path) -> None:
    result = run(short_tmp, "demo", "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    [folder] = demo_folders(short_tmp)
    try:
        config = folder / "gateway.toml"
        assert f"gateway --config {config} outbox list" in result.stdout
        listed = run(short_tmp, "--config", str(config), "outbox", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert [(row["kind"], row["status"]) for row in rows] == [
            ("registration", "sent"),
            ("code", "sent"),
            ("receipt", "sent"),
        ]
        shown = run(short_tmp, "--config", str(config), "outbox", "show", str(rows[2]["id"]))
        assert shown.returncode == 0, shown.stderr
        (short_tmp / "accuse.eml").write_text(shown.stdout)
        pdf = folder / "guardian" / "compte-de-gestion-2025.pdf"
        verified = run(short_tmp, "--config", str(config), "receipts", "verify",
                       str(short_tmp / "accuse.eml"), "--document", str(pdf))  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "receipted as document 1" in verified.stdout
        assert wait_for_no_daemons_under(short_tmp) == []
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("step", "seen"),
    [
        ("submission", "S: 550 5.7.1 signature DKIM non valide (DKIM signature does not verify)"),
        ("receipt", "signature does not match the receipt"),
    ],
)
def test_demo_step_that_does_not_hold_exits_non_zero_naming_it(
    short_tmp: Path, step: str, seen: str
) -> None:
    result = run(short_tmp, "demo", GATEWAY_DEMO_SABOTAGE=step)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"gateway: demo failed at step {step!r}" in result.stderr
    assert seen in result.stdout + result.stderr
    assert "every step held" not in result.stdout
    assert "Traceback" not in result.stderr
    assert demo_folders(short_tmp) == []
    assert wait_for_no_daemons_under(short_tmp) == []


def test_demo_unknown_sabotage_is_refused(short_tmp: Path) -> None:
    result = run(short_tmp, "demo", GATEWAY_DEMO_SABOTAGE="nothing")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "gateway: GATEWAY_DEMO_SABOTAGE: expected one of receipt, submission"
    )
    assert demo_folders(short_tmp) == []
