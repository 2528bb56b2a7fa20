"""Header decoding: encoded words, raw 8-bit, addresses, Message-ID, Date."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import getaddresses

import pytest

from gateway.ingest.mime import MimeLimits, ParsedMessage, parse_message


def parse_headers(*lines: bytes) -> ParsedMessage:
    raw = b"\r\n".join([*lines, b"", b"body"])
    return parse_message(raw, MimeLimits(), id_domain="gw.example")


FROM = b"From: a@avocats.example"


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        (b"Subject: plain", "plain"),
        (b"Subject: =?UTF-8?B?w6l0w6k=?=", "été"),
        (b"Subject: =?utf-8?q?caf=C3=A9_cr=C3=A8me?=", "café crème"),
        (b"Subject: =?ISO-8859-15?Q?=A4uros?=", "€uros"),
        (b"Subject: =?utf-8?Q?a?= =?utf-8?Q?b?=", "ab"),  # space between words dropped
        (b"Subject: =?utf-8?Q?a?= b", "a b"),
        (b"Subject: =?UTF-8*fr?Q?langue?=", "langue"),  # RFC 2231 language suffix
        (b"Subject: =?utf-8?B?w6l0w6k?=", "été"),  # missing base64 padding
        (b"Subject: =?x-unknown?Q?r=E9sum=E9?=", "résumé"),  # unknown charset: Latin-1
        (b"Subject: =?x-unknown?Q?r=C3=A9sum=C3=A9?=", "résumé"),  # unknown charset: UTF-8
        (b"Subject: =?utf-8?B?!!!?=", "=?utf-8?B?!!!?="),  # undecodable: kept as written
        ("Subject: déjà vu".encode(), "déjà vu"),  # raw UTF-8 (RFC 6532)
        ("Subject: déjà vu".encode("latin-1"), "déjà vu"),  # raw Latin-1 from old clients
        (b"Subject:  folded\r\n\tover\r\n   lines  ", "folded over lines"),
        (b"X-Other: no subject", ""),
    ],
)
def test_subject_decoding(header: bytes, subject: str) -> None:
    assert parse_headers(FROM, header).subject == subject


def test_multibyte_character_split_across_encoded_words() -> None:
    # Some mailers cut a UTF-8 sequence between two B words: join bytes before decoding.
    msg = parse_headers(
        FROM, b"Subject: =?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?= =?UTF-8?B?ww==?= =?UTF-8?B?qQ==?="
    )
    assert msg.subject == "ééé"


def test_from_display_name_with_specials_stays_parseable() -> None:
    # Decoded naively, "Dupont, Jean" would read as two addresses.
    msg = parse_headers(b"From: =?utf-8?q?Dupont=2C_Jean?= <jean@avocats.example>")
    assert msg.from_header == '"Dupont, Jean" <jean@avocats.example>'
    assert getaddresses([msg.from_header]) == [("Dupont, Jean", "jean@avocats.example")]


def test_from_display_name_spoofing_an_address_is_quoted() -> None:
    msg = parse_headers(b"From: =?utf-8?q?juge=40tj-lyon=2Eexample?= <x@evil.example>")
    assert getaddresses([msg.from_header]) == [("juge@tj-lyon.example", "x@evil.example")]


def test_from_encoded_word_inside_quotes_is_escaped_not_requoted() -> None:
    msg = parse_headers(b'From: "=?utf-8?q?Dupont=2C_=22Jean=22?=" <jean@avocats.example>')
    assert getaddresses([msg.from_header]) == [('Dupont, "Jean"', "jean@avocats.example")]


def test_from_plain_non_ascii_name() -> None:
    msg = parse_headers("From: Élodie Martin <elodie@avocats.example>".encode())
    assert msg.from_header == "Élodie Martin <elodie@avocats.example>"


def test_repeated_from_fields_are_joined_for_senderauth_to_refuse() -> None:
    msg = parse_headers(FROM, b"From: b@avocats.example")
    assert msg.from_header == "a@avocats.example, b@avocats.example"


def test_to_and_cc_are_address_lists() -> None:
    msg = parse_headers(
        FROM,
        b'To: "Greffe, TJ" <depot@greffe.example>, other@greffe.example',
        b"To: =?utf-8?q?Tr=C3=A9sor?= <tresor@greffe.example>",
        b"Cc: undisclosed-recipients:;",
    )
    assert msg.to == ["depot@greffe.example", "other@greffe.example", "tresor@greffe.example"]
    assert msg.cc == []


@pytest.mark.parametrize(
    ("header", "message_id"),
    [
        (b"Message-ID: <abc.123@avocats.example>", "abc.123@avocats.example"),
        (b"Message-Id:   <abc@x.example>  (comment)", "abc@x.example"),
        (b"message-id: bare@x.example", "bare@x.example"),
    ],
)
def test_message_id_forms(header: bytes, message_id: str) -> None:
    msg = parse_headers(FROM, header)
    assert (msg.message_id, msg.message_id_generated) == (message_id, False)


@pytest.mark.parametrize("header", [b"Message-ID:", b"Message-ID: not an id", b"Message-ID: <>"])
def test_unusable_message_id_is_generated(header: bytes) -> None:
    msg = parse_headers(FROM, header)
    assert msg.message_id_generated
    assert msg.message_id.endswith("@gw.example")


@pytest.mark.parametrize(
    ("header", "date"),
    [
        (b"Date: Tue, 04 Mar 2025 10:15:00 +0100", datetime(2025, 3, 4, 9, 15, tzinfo=UTC)),
        (b"Date: 4 Mar 2025 10:15 -0500", datetime(2025, 3, 4, 15, 15, tzinfo=UTC)),
        (b"Date: Tue, 04 Mar 2025 10:15:00 -0000", datetime(2025, 3, 4, 10, 15, tzinfo=UTC)),
        (b"Date: Tue, 04 Mar 2025 10:15:00 GMT", datetime(2025, 3, 4, 10, 15, tzinfo=UTC)),
        (b"Date: yesterday", None),
        (b"Date: Tue, 04 Mar 99999 10:15:00 +0000", None),
        (b"X-No-Date: x", None),
    ],
)
def test_date_parsing(header: bytes, date: datetime | None) -> None:
    parsed = parse_headers(FROM, header).date
    assert parsed == date
    if parsed is not None:
        assert parsed.tzinfo is UTC


def test_mbox_from_line_is_skipped() -> None:
    msg = parse_headers(b"From sender@x.example Tue Mar  4 10:15:00 2025", FROM, b"Subject: s")
    assert (msg.from_header, msg.subject) == ("a@avocats.example", "s")


def test_from_with_space_before_colon_is_a_header_not_an_mbox_line() -> None:
    assert parse_headers(b"From : a@avocats.example").from_header == "a@avocats.example"
