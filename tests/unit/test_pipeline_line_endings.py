"""The bare CR / bare LF detector that guards against SMTP smuggling."""

from __future__ import annotations

import pytest

from gateway.ingest.pipeline import has_bare_line_ending


@pytest.mark.parametrize("raw", [b"", b"a\r\nb\r\n", b"\r\n\r\n", b"no newline at all"])
def test_clean_line_endings(raw: bytes) -> None:
    assert not has_bare_line_ending(raw)


@pytest.mark.parametrize(
    "raw", [b"a\nb", b"a\rb", b"a\r\n.\n", b"a\n.\r\n", b"\r\r\n", b"\r\n\n", b"x\r"]
)
def test_bare_line_endings(raw: bytes) -> None:
    assert has_bare_line_ending(raw)
