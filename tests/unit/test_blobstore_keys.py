"""BlobStore key validation: no untrusted string reaches the file system."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from gateway.storage.blobstore import BlobStore

GOOD_ID = "12345678-1234-4234-8234-123456789abc"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "../etc/passwd",
        "/etc/passwd",
        f"2026/11/25/../../{GOOD_ID}.raw.pgp",
        f"2026/11/25/{GOOD_ID}.raw.pgp/..",
        f"/2026/11/25/{GOOD_ID}.raw.pgp",
        f"2026/11/25/{GOOD_ID}.exe.pgp",
        f"2026/11/25/{GOOD_ID.upper()}.raw.pgp",
        f"2026/11/25/{GOOD_ID}.raw.pgp\n",
        f"2026\\11\\25\\{GOOD_ID}.raw.pgp",
        f"2026/11/25/.{GOOD_ID}.raw.pgp.0123456789abcdef.tmp",
        f"2026/11/25//{GOOD_ID}.raw.pgp",
        f"2026/11/25/{GOOD_ID}.raw",
    ],
)
def test_bad_key_refused_everywhere(tmp_path: Path, key: str) -> None:
    store = BlobStore(tmp_path)
    for operation in (
        lambda: store.write(key, b"x"),
        lambda: store.read(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(ValueError, match="invalid blob key"):
            operation()
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        BlobStore(tmp_path).new_key("../x", datetime.fromisoformat("2026-11-25T10:00:00+00:00"))


def test_naive_time_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone"):
        BlobStore(tmp_path).new_key("raw", datetime(2026, 11, 25))
