"""Relaxed canonicalization for our own DKIM signatures, on RFC 6376's own example."""

from __future__ import annotations

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
