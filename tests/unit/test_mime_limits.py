"""MIME limits: depth, part count, header count, header size and header line length, at the edge."""

from __future__ import annotations

import pytest

from gateway.errors import MalformedMessage
from gateway.ingest.mime import MimeLimits, parse_message
from tests.fixtures.eml.make_corpus import too_deep, too_many_parts

FROM = b"From: a@avocats.example\r\n"


def parse(raw: bytes, **limits: int) -> None:
    parse_message(raw, MimeLimits(**limits), id_domain="gw.example")


def refusal(raw: bytes, **limits: int) -> str:
    with pytest.raises(MalformedMessage) as refused:
        parse(raw, **limits)
    reason = refused.value.message
    assert reason.isascii() and "\n" not in reason and "\r" not in reason
    return reason


def nested_messages(levels: int) -> bytes:
    """A message attaching a message attaching ... (message/rfc822, no boundaries needed)."""
    raw = FROM + b"\r\ninnermost"
    for _ in range(levels):
        raw = FROM + b"Content-Type: message/rfc822\r\n\r\n" + raw
    return raw


def test_depth_at_the_limit_is_accepted() -> None:
    # 10 nested multiparts put the text part at depth 10.
    parse(too_deep(levels=10))


def test_depth_over_the_limit_is_refused() -> None:
    assert refusal(too_deep(levels=11)) == "nesting deeper than 10"


def test_depth_limit_is_configurable() -> None:
    assert refusal(too_deep(levels=3), max_depth=2) == "nesting deeper than 2"


def test_attached_messages_count_towards_depth() -> None:
    # The body of a message/rfc822 entity (the attached message) is one level deeper.
    parse(nested_messages(10))
    assert refusal(nested_messages(11)) == "nesting deeper than 10"


def test_part_count_at_the_limit_is_accepted() -> None:
    parse(too_many_parts(count=199))  # 199 leaves + the multipart top level = 200


def test_part_count_over_the_limit_is_refused() -> None:
    assert refusal(too_many_parts(count=200)) == "more than 200 MIME parts"


def test_part_count_stops_early_on_a_flood_of_parts() -> None:
    assert refusal(too_many_parts(count=20_000), max_parts=10) == "more than 10 MIME parts"


def headers(count: int) -> bytes:
    return FROM + b"".join(b"X-Filler-%d: value\r\n" % index for index in range(count - 1))


def test_header_count_at_the_limit_is_accepted() -> None:
    parse(headers(500) + b"\r\nbody")


def test_header_count_over_the_limit_is_refused() -> None:
    assert refusal(headers(501) + b"\r\nbody") == "too many header fields (more than 500)"


def test_folded_lines_are_one_field() -> None:
    folded = FROM + b"Subject: one\r\n" + b" more\r\n" * 600 + b"\r\nbody"
    parse(folded, max_line_bytes=10_000)


def test_header_count_applies_to_body_parts() -> None:
    part_head = b"".join(b"X-P%d: v\r\n" % index for index in range(20))
    raw = (
        FROM + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n" + part_head + b"\r\ntext\r\n--b--\r\n"
    )
    assert refusal(raw, max_headers=10) == "too many header fields (more than 10)"


def test_header_block_size_limit() -> None:
    big = FROM + b"X-Big: " + b"x" * 5000 + b"\r\n"
    parse(big + b"\r\nbody", max_header_bytes=len(big))
    reason = refusal(big + b"\r\nbody", max_header_bytes=len(big) - 1)
    assert reason == f"header block larger than {len(big) - 1} bytes"


def test_header_without_end_is_refused_by_size_not_scanned_whole() -> None:
    raw = FROM + b"X-Long: a\r\n" * 10_000  # never a blank line
    assert refusal(raw, max_line_bytes=100) == "header block larger than 65536 bytes"


def test_long_header_line_is_refused() -> None:
    raw = FROM + b"Subject: " + b"s" * 8000 + b"\r\n\r\nbody"
    assert refusal(raw) == f"header line longer than {998 * 8} bytes"


def test_long_body_lines_are_accepted() -> None:
    # Base64 without line breaks is common; only header lines are bounded.
    raw = FROM + b"Content-Type: text/plain\r\n\r\n" + b"y" * 100_000
    parse(raw)
