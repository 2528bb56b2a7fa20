"""Robustness: mangled mail only ever raises MalformedMessage; big and hostile input stays fast."""

from __future__ import annotations

import base64
import contextlib
import random
import time

import pytest

from gateway.errors import MalformedMessage
from gateway.ingest.mime import MimeLimits, parse_message
from tests.fixtures.eml.make_corpus import build_corpus

TOKENS = [
    b"\r\n", b"\n", b"--", b"=?", b"?=", b"=?utf-8?B?", b";", b'"', b"*", b"'", b"%", b"=",
    b"boundary=", b"\x00", b"\xff", b"<", b">", b"filename*0*=", b"charset=punycode",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
]  # fmt: skip


def mangle(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        roll = rng.random()
        if roll < 0.4:
            data[at:at] = rng.choice(TOKENS)
        elif roll < 0.7:
            del data[at : at + rng.randint(1, 20)]
        else:
            data[at : at + 1] = bytes([rng.randrange(256)])
    return bytes(data)


def test_mangled_corpus_raises_only_malformed_message() -> None:
    rng = random.Random(20250304)
    corpus = list(build_corpus().values())
    for _ in range(1500):
        raw = mangle(rng.choice(corpus), rng)
        try:
            parse_message(raw, MimeLimits(), id_domain="gw.example")
        except MalformedMessage as refused:
            reason = refused.message
            assert reason.isascii() and "\n" not in reason and len(reason) < 100


def big_message(payload: bytes) -> bytes:
    return (
        b"From: a@avocats.example\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--zz\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(payload).replace(b"\n", b"\r\n")
        + b"--zz--\r\n"
    )


def elapsed(raw: bytes) -> float:
    start = time.perf_counter()
    with contextlib.suppress(MalformedMessage):
        parse_message(raw, MimeLimits(), id_domain="gw.example")
    return time.perf_counter() - start


def test_large_attachment_is_decoded_exactly() -> None:
    payload = random.Random(1).randbytes(8_000_000)
    msg = parse_message(big_message(payload), MimeLimits(), id_domain="gw.example")
    assert msg.attachments[0].content == payload
    assert msg.text_body == "hello"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\n"
            + b"--zzX\r\n" * 1_000_000,
            id="many-look-alike-delimiters",
        ),
        pytest.param(
            b"From: a@b.example\r\nContent-Type: text/html\r\n\r\n"
            + b"<!--<script><head><<" * 300_000,
            id="unclosed-html-constructs",
        ),
        pytest.param(
            b"From: a@b.example\r\nSubject: " + b"=?utf-8?q?a?= " * 500 + b"\r\n\r\n",
            id="many-words",
        ),
    ],
)
def test_hostile_input_is_handled_in_linear_time(raw: bytes) -> None:
    # Generous bound: a quadratic path would take minutes on these sizes.
    assert elapsed(raw) < 5.0
