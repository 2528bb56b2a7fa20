"""The relay transaction's shortcuts give what aiosmtplib's `sendmail` computed itself."""

from __future__ import annotations

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import normalize_message_line_endings

from gateway.outbox import worker
from gateway.outbox.worker import _command_address, _wire_length

ADDRESSES = [
    "noreply@greffe.example",
    "tuteur.famille+tutelle@famille.example",
    "a_b-c@sous-domaine.exemple.fr",
    "UPPER@EXAMPLE.ORG",
    "x@localhost",
    "",
    '"quoted local"@famille.example',
    "Name <name@famille.example>",
    "a..b@famille.example",
    ".a@famille.example",
    "a.@famille.example",
    "a@b..example",
    "a@.example",
    "o'brien@famille.example",
    "a@b@c.example",
    "a@[192.0.2.1]",
]
# What aiosmtplib refuses or parses down to a safe address: the same here.
AWKWARD = [
    "bad\r\n@famille.example",
    "a@famille.example> SIZE=1",
    "a b@famille.example",
    "<a@famille.example>\x00",
    "a@famille.example\r\nRCPT TO:<b@x.example>",
    "é@famille.example",
]


@pytest.mark.parametrize("address", ADDRESSES + AWKWARD)
def test_outbox_transaction_addresses_quoted_as_aiosmtplib_quotes_them(address: str) -> None:
    _command_address.cache_clear()
    try:
        expected: bytes | type[Exception] = quote_address(address).encode("ascii")
    except ValueError as error:  # UnicodeEncodeError included
        expected = type(error)

    if isinstance(expected, bytes):
        assert _command_address(address) == expected
    else:
        with pytest.raises(expected):
            _command_address(address)


def test_outbox_transaction_plain_shortcut_only_for_what_quoting_leaves_alone() -> None:
    for address in ADDRESSES + AWKWARD:
        if worker._PLAIN_ADDRESS.fullmatch(address):
            assert quote_address(address) == f"<{address}>"


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@b.example\r\n\r\nbody\r\n",
        b"From: a@b.example\r\n\r\nno final line break",
        b"From: a@b.example\n\nbare LF\n",
        b"From: a@b.example\r\rbare CR\r",
        b"mixed\r\nendings\nand\rmore\r\n\r\n",
        b"",
        b"\r\n",
        b"\n\r",
        b".leading dot\r\n..two\r\n",
    ],
)
def test_outbox_transaction_size_is_the_length_sent_in_data(message: bytes) -> None:
    assert _wire_length(message) == len(normalize_message_line_endings(message))
