"""IMAP client pure parts: FETCH responses, INTERNALDATE, and the private-address check."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import ConfigError
from gateway.imap.client import (
    ImapUnavailable,
    checked_address,
    parse_fetch,
    parse_internal_date,
    parse_sizes,
    refuses_address,
    uid_set,
)
from gateway.settings import ImapMailbox


def test_imap_fetch_response_parsed_with_literals() -> None:
    lines = [
        b'1 FETCH (UID 7 FLAGS (\\Seen \\Flagged) INTERNALDATE "25-Nov-2026 02:57:28 +0100" '
        b"BODY[] {12}",
        bytearray(b"From: a\r\n\r\n("),  # a parenthesis in the body must not confuse us
        b")",
        b"2 FETCH (FLAGS (\\Seen))",  # an unsolicited flag update: no body, ignored
        b"3 FETCH (BODY[] {5}",
        bytearray(b"x\r\ny\r"),
        b" UID 9 FLAGS ())",  # some servers put UID after the literal
        b"Fetch completed.",
    ]
    first, second = parse_fetch(lines)
    assert (first.uid, first.flags, first.raw) == (7, ("\\Seen", "\\Flagged"), b"From: a\r\n\r\n(")
    assert first.internal_date == datetime(2026, 11, 25, 1, 57, 28, tzinfo=UTC)
    assert (second.uid, second.flags, second.raw, second.internal_date) == (
        9,
        (),
        b"x\r\ny\r",
        None,
    )


def test_imap_internal_date_malformed_is_none() -> None:
    assert parse_internal_date("yesterday") is None
    assert parse_internal_date(" 1-Jan-2024 00:00:00 +0000") == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", True),
        ("192.168.0.10", True),
        ("172.16.5.4", True),
        ("169.254.169.254", True),  # link-local: cloud metadata
        ("fd00::1", True),
        ("0.0.0.0", True),
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
    ],
)
def test_imap_private_addresses_refused(address: str, refused: bool) -> None:
    assert refuses_address(address) is refused


def _mailbox(**changes: object) -> ImapMailbox:
    values: dict[str, object] = {"name": "intake", "host": "imap.court.example", "username": "u"}
    values.update(changes)
    return ImapMailbox.model_validate(values)


async def test_imap_host_resolving_to_private_address_refused_unless_allowed() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("imap.court.example", 993)
        return ["93.184.216.34", "10.0.0.5"]  # any private answer refuses the host

    with pytest.raises(ConfigError, match="allow_private"):
        await checked_address(_mailbox(), resolve)
    assert await checked_address(_mailbox(allow_private=True), resolve) == "93.184.216.34"


async def test_imap_unresolvable_host_is_temporary() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(ImapUnavailable):
        await checked_address(_mailbox(), resolve)


def test_imap_uid_set_names_exactly_the_uids_given() -> None:
    assert uid_set([7]) == "7"
    assert uid_set([5, 3, 4, 9, 12, 13, 4]) == "3:5,9,12:13"  # sorted, deduplicated
    assert uid_set([1, 3, 5]) == "1,3,5"  # a gap is never bridged by a range
    with pytest.raises(ValueError):
        uid_set([])


def test_imap_sizes_parsed_and_flag_updates_ignored() -> None:
    lines = [
        b"1 FETCH (UID 4 RFC822.SIZE 102400)",
        b"2 FETCH (RFC822.SIZE 17 UID 9)",
        b"3 FETCH (FLAGS (\\Seen))",  # unsolicited: no size, ignored
        b"Fetch completed.",
    ]
    assert parse_sizes(lines) == {4: 102400, 9: 17}
