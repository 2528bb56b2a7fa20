"""The relay transaction's shortcuts give what aiosmtplib's `sendmail` computed itself."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from gateway.outbox import worker
from gateway.outbox.worker import Composed, _command_address, data_wire_form

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


def _aiosmtplib_data(message: bytes) -> tuple[int, bytes]:
    """The SIZE `sendmail` computed and the bytes `execute_data_command` sends after DATA."""
    normalised = normalize_message_line_endings(message)
    return len(normalised), PERIOD_REGEX.sub(b"..", normalised) + b".\r\n"


MESSAGES = [
    b"From: a@b.example\r\n\r\nbody\r\n",
    b"From: a@b.example\r\n\r\nno final line break",
    b"From: a@b.example\n\nbare LF\n",
    b"From: a@b.example\r\rbare CR\r",
    b"mixed\r\nendings\nand\rmore\r\n\r\n",
    b"",
    b"\r\n",
    b"\n\r",
    b".leading dot\r\n..two\r\n",
    b"a\r\n.\r\n.\r\n",
    b"a\n.b\r.c\r\n.",
    b".",
    b"..\r\n",
]


@pytest.mark.parametrize("message", MESSAGES)
def test_outbox_transaction_size_and_data_as_aiosmtplib_sends_them(message: bytes) -> None:
    assert data_wire_form(message) == _aiosmtplib_data(message)
    composed = Composed("noreply@greffe.example", message)
    assert (composed.size, composed.wire) == _aiosmtplib_data(message)


def test_outbox_transaction_data_random_messages_as_aiosmtplib_sends_them() -> None:
    rng = random.Random(1870)
    alphabet = [b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b" ", b"\xc3\xa9"]
    for case in range(3000):
        message = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        assert data_wire_form(message) == _aiosmtplib_data(message), (case, message)
