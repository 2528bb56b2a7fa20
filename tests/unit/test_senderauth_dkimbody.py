"""The streaming DKIM body hash equals dkimpy's canonical body hash, byte for byte."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy

from gateway.ingest import dkimbody
from gateway.ingest.dkimbody import body_hash, body_start

HEAD = b"From: alice@example.org\r\nSubject: x\r\n\r\n"

# Bodies where canonicalisation has corner cases (RFC 6376 3.4, and dkimpy's own quirks).
BODIES: list[bytes] = [
    b"",
    b"\r\n",
    b"\r\n\r\n\r\n",
    b"Bonjour\r\n",
    b"Bonjour",
    b"Bonjour  ",
    b"Bonjour \t ",
    b"Bonjour\r\n\r\n\r\n",
    b"Bonjour\r\n \r\n\t\r\n",
    b"Bonjour\r\n \r\n\t\r\nx",
    b"a  b\t\tc \r\n  d\r\n",
    b" \r\n",
    b" ",
    b"\t\r\n \r\n",
    b"\r\n\r\nBonjour\r\n",
    b"line\rwith bare CR\r\n",
    b"ends with CR\r",
    b"ends with CR CRLF\r\r\n",
    b"\r\r\n\r\n",
    b"\r\r\n\r\r\n\r\n",
    b"lf only\nsecond\n\n\n",
    b"mixed\r\nlf\n \n\r\n",
    b"trailing ws then cr \r",
    b"x" * 5000 + b"\r\n" + b" " * 3000 + b"\r\n" * 100,
    b"\r\n" * 40_000 + b"end\r\n" + b"\r\n" * 40_000,
]


def dkimpy_body_hash(
    raw: bytes, canonicalization: bytes, hasher: Callable[[bytes], object], length: int | None
) -> bytes:
    """What dkimpy hashes for bh= (DomainSigner.verify_sig_process), on the whole message."""
    policy = CanonicalizationPolicy.from_c_value(b"simple/" + canonicalization)
    body = policy.canonicalize_body(dkim.DKIM(raw).body)
    if length is not None:
        body = body[:length]
    digest: bytes = hasher(body).digest()  # type: ignore[attr-defined]
    return digest


def streaming_body_hash(
    raw: bytes, canonicalization: bytes, hasher: Callable[[], object], length: int | None
) -> bytes:
    return body_hash(raw, body_start(raw), canonicalization, hasher, length)  # type: ignore[arg-type]


@pytest.fixture(params=[7, 64, dkimbody.PIECE_BYTES], ids=lambda size: f"piece{size}")
def piece_size(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Tiny pieces put piece boundaries inside every corner case above."""
    size: int = request.param
    monkeypatch.setattr(dkimbody, "PIECE_BYTES", size)
    return size


@pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
@pytest.mark.parametrize("body", BODIES, ids=lambda body: repr(body[:24]))
def test_dkimbody_matches_dkimpy(piece_size: int, canonicalization: bytes, body: bytes) -> None:
    raw = HEAD + body
    for hasher in (hashlib.sha256, hashlib.sha1):
        assert streaming_body_hash(raw, canonicalization, hasher, None) == dkimpy_body_hash(
            raw, canonicalization, hasher, None
        )


@pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
@pytest.mark.parametrize("body", BODIES, ids=lambda body: repr(body[:24]))
def test_dkimbody_length_tag_matches_dkimpy(
    piece_size: int, canonicalization: bytes, body: bytes
) -> None:
    raw = HEAD + body
    for length in (0, 1, 3, 9, 10_001, 10**30):
        assert streaming_body_hash(raw, canonicalization, hashlib.sha256, length) == (
            dkimpy_body_hash(raw, canonicalization, hashlib.sha256, length)
        ), length


@pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
def test_dkimbody_random_bodies_match_dkimpy(canonicalization: bytes) -> None:
    # Bodies made only of the bytes canonicalisation cares about, in every order.
    rng = random.Random(6376)
    alphabet = [b"a", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b".", b"  "]
    for case in range(1500):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        raw = HEAD + body
        size = rng.choice([1, 2, 3, 5, 8, 1024])
        length = rng.choice([None, None, 0, rng.randrange(0, 50)])
        dkimbody_piece = dkimbody.PIECE_BYTES
        dkimbody.PIECE_BYTES = size
        try:
            got = streaming_body_hash(raw, canonicalization, hashlib.sha256, length)
        finally:
            dkimbody.PIECE_BYTES = dkimbody_piece
        assert got == dkimpy_body_hash(raw, canonicalization, hashlib.sha256, length), (
            case,
            body,
            size,
            length,
        )


@pytest.mark.parametrize(
    "raw",
    [
        # (b"" has no headers, hence no signature: dkimpy cannot hash it anyway.)
        b"From: a@example.org",
        b"From: a@example.org\r\n",
        b"From: a@example.org\r\nSubject: no body\r\n",
        b"\r\nbody after an empty first line\r\n",
        b"\nbody after an LF first line\n",
        b"From: a@example.org\n\nLF message\n \n\n",
        b"From: a@example.org\r\n\n mixed separator\r\n",
        b"From: a@example.org\r\n\r\n\r\nbody starts with an empty line\r\n",
    ],
)
@pytest.mark.parametrize("canonicalization", [b"simple", b"relaxed"])
def test_dkimbody_header_body_split_matches_dkimpy(raw: bytes, canonicalization: bytes) -> None:
    assert streaming_body_hash(raw, canonicalization, hashlib.sha256, None) == (
        dkimpy_body_hash(raw, canonicalization, hashlib.sha256, None)
    )


def test_dkimbody_large_base64_body_matches_dkimpy() -> None:
    # The shape of a real deposit: a long base64 attachment in 76-column lines.
    rng = random.Random(25)
    line = b"QUJD" * 19 + b"\r\n"
    body = b"".join(line if rng.random() < 0.999 else b"  \t \r\n" for _ in range(60_000))
    raw = HEAD + body + b"\r\n\r\n"
    for canonicalization in (b"simple", b"relaxed"):
        assert streaming_body_hash(raw, canonicalization, hashlib.sha256, None) == (
            dkimpy_body_hash(raw, canonicalization, hashlib.sha256, None)
        )


def test_dkimbody_changed_body_changes_hash() -> None:
    raw = HEAD + b"Bonjour\r\n"
    for canonicalization in (b"simple", b"relaxed"):
        original = streaming_body_hash(raw, canonicalization, hashlib.sha256, None)
        tampered = streaming_body_hash(
            raw.replace(b"Bonjour", b"Bonsoir"), canonicalization, hashlib.sha256, None
        )
        assert original != tampered


def test_dkimbody_refuses_unknown_canonicalization() -> None:
    with pytest.raises(ValueError, match="canonicalization"):
        body_hash(HEAD, body_start(HEAD), b"nowsp", hashlib.sha256)
    with pytest.raises(ValueError, match="negative"):
        body_hash(HEAD, body_start(HEAD), b"simple", hashlib.sha256, -1)
