"""single_from parses only the header block, and finds exactly the headers a full parse finds."""

from __future__ import annotations

import email.parser
import email.policy
import random

import pytest

from gateway.ingest.senderauth import header_block, single_from

CASES: list[bytes] = [
    b"From: a@example.org\r\nSubject: x\r\n\r\nFrom: b@example.org\r\n",
    b"From: a@example.org\nSubject: x\n\nFrom: b@example.org\n",
    b"From: a@example.org\rSubject: x\r\rFrom: b@example.org\r",
    b"From: a@example.org\r\n\nFrom: b@example.org\r\n",
    b"From: a@example.org\n\r\nFrom: b@example.org\r\n",
    b"From: a@example.org\r\r\nFrom: b@example.org\r\n",
    b"From: a@example.org\r\nX: y\x0c\r\nFrom: b@example.org\r\n\r\nbody",
    b"From: a@example.org\r\nnot a header line\r\nFrom: b@example.org\r\n\r\n",
    b"From: a@example.org\r\n folded\r\n\tagain\r\nSubject: x",
    b"From: a@example.org",
    b"From: a@example.org\r\nSubject: no body\r\n",
    b"\r\nFrom: a@example.org\r\n",
    b"\nFrom: a@example.org\r\n",
    b"",
    b"From a@example.org Mon Jan 1\r\nFrom: a@example.org\r\n\r\nbody",
    b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.org>\r\nSubject: \xc3\xa9t\xc3\xa9\r\n\r\n\xff",
]


def _full(raw: bytes) -> list[tuple[str, str]]:
    parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    return [(name, str(value)) for name, value in parsed.items()]


def _prefix(raw: bytes) -> list[tuple[str, str]]:
    return _full(header_block(raw))


@pytest.mark.parametrize("raw", CASES, ids=repr)
def test_senderauth_headerblock_same_headers_as_full_parse(raw: bytes) -> None:
    assert _prefix(raw) == _full(raw)


def test_senderauth_headerblock_random_line_endings() -> None:
    rng = random.Random(5322)
    pieces = [b"From: a@example.org", b"To: b@example.org", b" folded", b"x", b"Subject: y"]
    endings = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\x0c", b""]
    for case in range(2000):
        raw = b"".join(rng.choice(pieces) + rng.choice(endings) for _ in range(rng.randrange(1, 8)))
        assert _prefix(raw) == _full(raw), (case, raw)


def test_senderauth_headerblock_stops_at_the_first_empty_line() -> None:
    raw = b"From: a@example.org\r\n\r\n" + b"x" * 1_000_000
    assert header_block(raw) == b"From: a@example.org\r\n\r\n"
    assert header_block(b"From: a@example.org\r\n") == b"From: a@example.org\r\n"


def test_senderauth_headerblock_from_in_body_is_not_a_second_from() -> None:
    raw = b"From: a@example.org\r\nTo: d@court.example\r\n\r\nFrom: b@example.org\r\n"
    assert str(single_from(raw)) == "a@example.org"
