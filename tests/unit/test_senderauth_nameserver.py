"""Parsing the [dns] nameservers setting."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.ingest.dns import TxtResolver, parse_nameserver


@pytest.mark.parametrize(
    ("text", "address", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("192.0.2.1", "192.0.2.1", 53),
        ("::1", "::1", 53),
        ("[::1]:5353", "::1", 5353),
        (" 127.0.0.1 ", "127.0.0.1", 53),
    ],
)
def test_senderauth_nameserver_parsed(text: str, address: str, port: int) -> None:
    nameserver = parse_nameserver(text)
    assert (nameserver.address, nameserver.port) == (address, port)


@pytest.mark.parametrize(
    "text", ["dns.example.org", "127.0.0.1:0", "127.0.0.1:99999", "[::1]", "1.2.3.4:x", ""]
)
def test_senderauth_nameserver_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_nameserver(text)


def test_senderauth_nameserver_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        TxtResolver(["127.0.0.1"], 0)
