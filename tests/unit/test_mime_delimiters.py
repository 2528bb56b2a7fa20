"""Multipart delimiter lines found by `bytes.find` are those RFC 2046's grammar matches.

The reference is the regular expression the parser used before (one pattern
compiled per boundary, which cost more than the parse): the two must agree
on every buffer, including look-alike lines, bare CRs and missing endings.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator

from gateway.ingest.mime import _split_multipart


def reference(buf: bytes, start: int, end: int, delimiter: bytes) -> Iterator[tuple[int, int]]:
    line = re.escape(delimiter) + rb"(--)?[ \t\r]*(?:\n|\Z)"
    first = re.compile(line).match(buf, start, end)
    later = re.compile(rb"\n" + line).finditer(buf, start, end)
    part_start = -1
    for match in itertools.chain([first] if first else [], later):
        if part_start >= 0:
            part_end = match.start()
            part_end -= part_end > part_start and buf[part_end - 1] == 0x0D
            yield part_start, max(part_start, part_end)
        if match.group(1):
            return
        part_start = match.end()
    if part_start >= 0:
        yield part_start, end


PIECES = [b"--b", b"--b--", b"\n", b"\r\n", b"\r", b" ", b"\t", b"x", b"-", b"--bX", b"b", b"--"]


def test_same_parts_as_the_grammar_on_random_buffers() -> None:
    rnd = random.Random(2046)
    for _ in range(30000):
        buf = b"".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 14)))
        start = rnd.randint(0, len(buf))
        end = rnd.randint(start, len(buf))
        got = list(_split_multipart(buf, start, end, b"--b"))
        assert got == list(reference(buf, start, end, b"--b")), (buf, start, end)


def test_a_real_body() -> None:
    body = (
        b"preamble\r\n--=_x\r\nContent-Type: text/plain\r\n\r\nBonjour\r\n"
        b"--=_xy not a delimiter\r\n--=_x  \r\n\r\nPDF\r\n--=_x--\r\nepilogue"
    )
    parts = list(_split_multipart(body, 0, len(body), b"--=_x"))
    assert parts == list(reference(body, 0, len(body), b"--=_x"))
    assert [body[a:b] for a, b in parts] == [
        b"Content-Type: text/plain\r\n\r\nBonjour\r\n--=_xy not a delimiter",
        b"\r\nPDF",
    ]
