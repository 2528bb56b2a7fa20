"""The From: header must hold exactly one valid address."""

from __future__ import annotations

import email.parser
import email.policy
import random

import pytest

from gateway.errors import MultipleFrom
from gateway.ingest.senderauth import single_from
from gateway.model import Mailbox


def _message(*headers: bytes) -> bytes:
    return b"\r\n".join((*headers, b"To: depot@court.example", b"Subject: x", b"", b"body", b""))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"From: alice@example.org", Mailbox("alice", "example.org")),
        (b"From: Alice Martin <Alice@Example.ORG>", Mailbox("Alice", "example.org")),
        (b"From: =?utf-8?q?Ren=C3=A9e?= <renee@example.org>", Mailbox("renee", "example.org")),
        (b"from:   bob@example.org  ", Mailbox("bob", "example.org")),
    ],
)
def test_senderauth_from_single_address(header: bytes, expected: Mailbox) -> None:
    assert single_from(_message(header)) == expected


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (b"From: a@example.org, b@example.org",),
        (b"From: a@example.org", b"From: b@example.org"),
        (b"From: undisclosed-recipients:;",),
        (b"From: not an address",),
        (b"From: <>",),
        (b"From: alice@",),
        (b"From: alice@localhost",),
        (b"From: \"a b\"@example.org",),
        (b"From: alice@exa\xffmple.org",),
        (b"From: Group: a@example.org, b@example.org;",),
    ],
)
def test_senderauth_from_refused(headers: tuple[bytes, ...]) -> None:
    with pytest.raises(MultipleFrom) as caught:
        single_from(_message(*headers))
    assert caught.value.message == "From: must hold exactly one valid address"


def _reference(raw: bytes) -> str:
    """What single_from answered when it parsed every header with the modern policy."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    try:
        values = headers.get_all("From") or []
        if len(values) != 1:
            return "refused"
        addresses = getattr(values[0], "addresses", ())
        if len(addresses) != 1:
            return "refused"
        return str(Mailbox.parse(addresses[0].addr_spec))
    except Exception:
        return "refused"


def _answer(raw: bytes) -> str:
    try:
        return str(single_from(raw))
    except MultipleFrom:
        return "refused"


FROM_VALUES = [
    b"alice@example.org", b"Alice <alice@example.org>", b"<alice@example.org>",
    b"\"Martin, Alice\" <alice@example.org>", b"=?utf-8?q?Ren=C3=A9e?= <renee@example.org>",
    b"=?utf-8?b?UmVuw6ll?= <renee@example.org>", b"a@example.org, b@example.org",
    b"Group: a@example.org;", b"Group: a@example.org, b@example.org;", b"undisclosed:;",
    b"alice@example.org (comment)", b"(c) alice@example.org", b"alice @ example.org",
    b"alice@[192.0.2.1]", b"\"a b\"@example.org", b"alice@exa\xffmple.org",
    b"R\xc3\xa9n\xc3\xa9e <renee@example.org>", b"<alice@example.org", b"alice@example.org>",
    b"Alice <alice@example.org> Bob <bob@example.org>", b"", b" ", b"<>", b"@", b"a@b@c.org",
    b"Alice\r\n <alice@example.org>", b"Alice <alice@\r\n\texample.org>",
    b"x" * 600 + b"@example.org",
    b"Alice <" + b"a" * 600 + b"@example.org>", b"alice@example.org;", b"alice@example.org,",
]


@pytest.mark.parametrize("value", FROM_VALUES, ids=repr)
def test_senderauth_from_same_answer_as_the_full_modern_parse(value: bytes) -> None:
    raw = _message(b"From: " + value)
    assert _answer(raw) == _reference(raw)
    assert _answer(raw) == _reference(raw)  # the second time through the remembered parse


def test_senderauth_from_random_headers_same_answer_as_the_full_modern_parse() -> None:
    rng = random.Random(6376)
    names = [b"From", b"from", b"FROM", b"From ", b"Sender", b"X-From", b"Frm"]
    endings = [b"\r\n", b"\n", b"\r\n ", b"\r\n\t", b"\r\r\n"]
    for case in range(3000):
        lines = []
        for _ in range(rng.randrange(0, 4)):
            lines.append(rng.choice(names) + rng.choice([b":", b": ", b" :"])
                         + rng.choice(FROM_VALUES) + rng.choice(endings))
        raw = b"".join(lines) + b"To: depot@court.example\r\n\r\nFrom: body@example.org\r\n"
        assert _answer(raw) == _reference(raw), (case, raw)
