"""Relaxed canonicalization for our own DKIM signatures, on RFC 6376's own example."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.outbox.dkimsign import relaxed_body, relaxed_header


def test_relaxed_header_rfc6376_example() -> None:
    assert relaxed_header(b"A", b" X") == b"a:X\r\n"
    assert relaxed_header(b"B ", b" Y\t\r\n\tZ  ") == b"b:Y Z\r\n"


def test_relaxed_body_rfc6376_example() -> None:
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert relaxed_body(body) == b" C\r\nD E\r\n"


def test_relaxed_body_empty_and_unterminated() -> None:
    assert relaxed_body(b"") == b""
    assert relaxed_body(b"\r\n\r\n") == b""
    assert relaxed_body(b"last line") == b"last line\r\n"


def _regex_only_body(body: bytes) -> bytes:
    """The canonical body by the two substitutions alone (before the shortcuts)."""
    text = re.sub(rb"[ \t]+\r\n", b"\r\n", re.sub(rb"[ \t]+", b" ", body)).rstrip(b"\r\n")
    return text + b"\r\n" if text else b""


@pytest.mark.parametrize(
    "text",
    [b"a b\r\nc\r\n", b"a  b\r\n", b"a\tb\r\n", b"a \r\nb", b"a\t\r\n", b" \r\n \r\n",
     b"a \t \r\n", b"x" * 80 + b"\r\n", b"  \r\n\t\r\n"],
)  # fmt: skip
def test_relaxed_shortcuts_change_nothing(text: bytes) -> None:
    assert relaxed_body(text) == _regex_only_body(text)
    unfolded = re.sub(rb"[ \t]+", b" ", re.sub(rb"\r\n(?=[ \t])", b"", text)).strip(b" \t")
    assert relaxed_header(b"X", text) == b"x:" + unfolded + b"\r\n"


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b" ", b"\t", b"\r\n", b"a", b"b", b"\r", b"\n"]), max_size=60))
def test_relaxed_body_equals_the_two_substitutions(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    assert relaxed_body(body) == _regex_only_body(body)


def test_relaxed_body_of_a_long_run_of_spaces() -> None:
    body = b"a" + b" " * 100_001 + b"b \t \r\n"
    assert relaxed_body(body) == b"a b\r\n"
