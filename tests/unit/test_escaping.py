"""Client-controlled text escaped for logs and replies: one line of printable ASCII, always."""

from __future__ import annotations

import pytest

from gateway.escaping import escape


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("MAIL", "MAIL"),
        ("\x1b[2JHELO", "\\x1b[2JHELO"),
        ("NOOP\rFAKE LOG LINE", "NOOP\\x0dFAKE LOG LINE"),
        ("a\nb", "a\\x0ab"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("tab\there", "tab\\x09here"),
        ("caf\u00e9", "caf\\xe9"),
        ("\u202eevil", "\\u202eevil"),  # a bidi override turns the rest of a line around
        ("\U0001f600", "\\U0001f600"),
        ("back\\slash", "back\\\\slash"),  # "\x1b" typed by a client is not ESC
    ],
)
def test_escape_str_control_and_non_ascii(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_escape_surrogate_escaped_bytes_shown_as_the_bytes() -> None:
    """aiosmtpd decodes command arguments with surrogateescape: show the bytes that came."""
    arg = b"VRFY \xff\xfe".decode("utf-8", errors="surrogateescape")
    assert escape(arg) == "VRFY \\xff\\xfe"


def test_escape_bytes() -> None:
    assert escape(b"\x1b]0;title\x07 ok\r\n") == "\\x1b]0;title\\x07 ok\\x0d\\x0a"
    assert escape(b"plain") == "plain"
    assert escape(b"\\") == "\\\\"


@pytest.mark.parametrize("raw", ["x" * 10, "\x1b" * 10, b"\r" * 10])
def test_escape_cuts_long_text_with_a_marker(raw: str | bytes) -> None:
    shown = escape(raw, limit=4)
    assert shown.endswith("...")
    assert shown.removesuffix("...") == escape(raw[:4])


def test_escape_output_is_always_one_printable_ascii_line() -> None:
    everything = "".join(map(chr, range(0x3000)))
    shown = escape(everything, limit=len(everything))
    assert shown.isascii() and shown.isprintable()
    assert escape(bytes(range(256)), limit=256).isprintable()
