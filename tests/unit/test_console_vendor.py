"""The vendored OpenPGP.js is the file VENDOR.md records (version and SHA-256), and is packaged."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import gateway.console

STATIC = Path(gateway.console.__file__).parent / "static"
ROOT = Path(__file__).resolve().parents[2]


def test_vendored_openpgp_matches_its_recorded_sha256() -> None:
    record = (STATIC / "vendor" / "VENDOR.md").read_text(encoding="utf-8")
    row = re.search(r"\| `openpgp.min.mjs` \|[^|]+\| ([0-9.]+) \| `([0-9a-f]{64})` \|", record)
    assert row, "VENDOR.md has no row for openpgp.min.mjs"
    data = (STATIC / "vendor" / "openpgp.min.mjs").read_bytes()
    assert hashlib.sha256(data).hexdigest() == row.group(2)
    assert data.startswith(f"/*! OpenPGP.js v{row.group(1)} ".encode())


def test_console_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["gateway"]
    base = STATIC.parents[1]
    shipped = {path for pattern in patterns for path in base.glob(pattern) if path.is_file()}
    console = Path(gateway.console.__file__).parent
    for path in (*console.glob("templates/*.html"), *STATIC.rglob("*.*")):
        assert path in shipped, path
