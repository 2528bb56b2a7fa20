"""The From: header must hold exactly one valid address."""

from __future__ import annotations

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
