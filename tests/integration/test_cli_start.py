"""What starting the `gateway` program costs: no library that only some commands need is
imported by all of them, and the collector is running again when a command runs."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

import gateway.cli

ROOT = Path(gateway.cli.__file__).parents[2]
ONLY_FOR_SOME = ["alembic", "psycopg", "httpx", "jsonschema", "gateway.demo.flow"]
"""Migrations, a PostgreSQL listener, OAuth or `greffe sync`, depot.json and receipts, the demo."""


def test_the_command_line_imports_no_library_only_some_commands_need() -> None:
    probe = (
        "import sys, gateway.cli.main; "
        f"print(' '.join(m for m in {ONLY_FOR_SOME!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert done.stdout.strip() == ""


def test_the_collector_runs_again_once_the_program_is_imported() -> None:
    gc.disable()
    try:
        with pytest.raises(SystemExit) as exit_info:
            gateway.cli.run(["--version"])
        assert exit_info.value.code == 0
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()  # this test process's heap goes back to the collector
