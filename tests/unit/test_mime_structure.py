"""MIME structure: delimiters, what counts as an attachment, transfer encodings, body text."""

from __future__ import annotations

import base64

import pytest

from gateway.errors import MalformedMessage
from gateway.ingest.mime import MimeLimits, ParsedMessage, parse_message

HEAD = b"From: a@avocats.example\r\nSubject: s\r\n"


def parse(raw: bytes) -> ParsedMessage:
    return parse_message(raw, MimeLimits(), id_domain="gw.example")


def multipart(*parts: bytes, boundary: bytes = b"b", close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    end = b"--" + boundary + b"--\r\n" if close else b""
    ctype = b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n'
    return HEAD + ctype + body + end


def leaf(ctype: bytes, payload: bytes, *extra: bytes) -> bytes:
    return b"\r\n".join([b"Content-Type: " + ctype, *extra, b"", payload])


def test_boundary_that_prefixes_another_is_not_confused() -> None:
    inner = (
        b'Content-Type: multipart/alternative; boundary="b-alt"\r\n\r\n'
        b"--b-alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--b-alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b-alt--"
    )
    msg = parse(multipart(inner, leaf(b"application/pdf", b"%PDF")))
    assert msg.text_body == "plain"
    assert [a.content for a in msg.attachments] == [b"%PDF"]


def test_delimiter_like_lines_inside_a_part_are_content() -> None:
    text = b"--bX not a delimiter\r\n --b indented\r\nx--b"
    msg = parse(multipart(leaf(b"text/plain", text)))
    assert msg.text_body == "--bX not a delimiter\n --b indented\nx--b"


def test_transport_padding_after_delimiter_is_allowed() -> None:
    raw = (
        HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\n\r\ntext\r\n--b-- \t\r\n"
    )
    assert parse(raw).text_body == "text"


def test_missing_closing_delimiter_keeps_the_last_part() -> None:
    msg = parse(multipart(leaf(b"text/plain", b"one"), leaf(b"image/png", b"PNG"), close=False))
    assert msg.text_body == "one"
    assert [a.content for a in msg.attachments] == [b"PNG\r\n"]


def test_preamble_and_epilogue_are_ignored() -> None:
    raw = (
        HEAD
        + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"preamble\r\n--b\r\n\r\nx\r\n--b--\r\nepilogue"
    )
    assert parse(raw).text_body == "x"


def test_part_without_headers_is_text_plain() -> None:
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nno header here\r\n--b--"
    assert parse(raw).text_body == "no header here"


def test_multipart_body_without_any_delimiter_is_refused() -> None:
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\nsome text but no delimiter\r\n"
    with pytest.raises(MalformedMessage, match="no body part found for the boundary of part 1"):
        parse(raw)


def test_empty_multipart_is_harmless() -> None:
    raw = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n"
    assert (parse(raw).text_body, parse(raw).attachments) == ("", [])


@pytest.mark.parametrize(
    ("part", "is_attachment"),
    [
        (leaf(b"text/plain", b"t"), False),
        (leaf(b"text/html", b"<p>t</p>"), False),
        (leaf(b"text/plain", b"t", b"Content-Disposition: attachment"), True),
        (leaf(b"text/plain", b"t", b"Content-Disposition: inline; filename=notes.txt"), True),
        (leaf(b'text/plain; name="notes.txt"', b"t"), True),
        (leaf(b"application/pdf", b"%PDF", b"Content-Disposition: inline"), True),
        (leaf(b"image/jpeg", b"JFIF"), True),
        (leaf(b"text/csv", b"a,b"), True),
    ],
)
def test_what_counts_as_an_attachment(part: bytes, is_attachment: bool) -> None:
    msg = parse(multipart(part))
    assert bool(msg.attachments) is is_attachment
    assert bool(msg.text_body) is not is_attachment


def test_declared_type_is_lower_case_without_parameters() -> None:
    msg = parse(multipart(leaf(b'Application/PDF; name="x.pdf"', b"%PDF")))
    assert msg.attachments[0].declared_type == "application/pdf"


def test_invalid_content_type_defaults_to_text_plain() -> None:
    assert parse(multipart(leaf(b"garbage", b"hello"))).text_body == "hello"


def test_plain_text_parts_are_joined_and_html_is_dropped_when_plain_exists() -> None:
    msg = parse(
        multipart(
            leaf(b"text/plain", b"first"),
            leaf(b"text/html", b"<p>alternative</p>"),
            leaf(b"text/plain", b"second"),
        )
    )
    assert msg.text_body == "first\nsecond"


def test_html_is_never_kept_as_html() -> None:
    html = (
        b"<html><head><title>T</title><style>b{}</style></head><body>"
        b"<script>alert(1)</script><div>Un&nbsp;&eacute;t&#233;</div><!-- c --><br/>"
        b"<a href='x'>lien</a> a &lt; b</body></html>"
    )
    body = parse(multipart(leaf(b"text/html; charset=utf-8", html))).text_body
    assert body == "Un été\n\nlien a < b"


def test_unclosed_head_does_not_hide_the_body() -> None:
    body = parse(multipart(leaf(b"text/html", b"<head><meta x><body><p>visible</p>"))).text_body
    assert body == "visible"


def test_base64_with_missing_padding_is_accepted() -> None:
    data = b"%PDF-1.4 abcde"
    encoded = base64.b64encode(data).rstrip(b"=")
    msg = parse(multipart(leaf(b"application/pdf", encoded, b"Content-Transfer-Encoding: base64")))
    assert msg.attachments[0].content == data


def test_base64_without_line_breaks_and_with_blanks() -> None:
    data = bytes(range(256)) * 50
    encoded = base64.b64encode(data)
    spaced = b" \t".join(encoded[i : i + 60] for i in range(0, len(encoded), 60))
    for payload in (encoded, spaced):
        msg = parse(
            multipart(leaf(b"application/pdf", payload, b"Content-Transfer-Encoding: BASE64"))
        )
        assert msg.attachments[0].content == data


@pytest.mark.parametrize(
    "payload",
    [
        b"JVBERi0x*LjQK",  # a character outside the alphabet
        b"QUJD\r\nRA==\r\nRUZH",  # data after padding: two glued encodings
        b"QUJDR",  # one character too many to be base64
    ],
)
def test_undecodable_base64_is_refused_with_the_part_number(payload: bytes) -> None:
    raw = multipart(
        leaf(b"text/plain", b"t"),
        leaf(b"application/pdf", payload, b"Content-Transfer-Encoding: base64"),
    )
    with pytest.raises(MalformedMessage, match=r"^undecodable base64 in part 3$"):
        parse(raw)


def test_quoted_printable_text_and_binary() -> None:
    text = leaf(
        b"text/plain; charset=utf-8",
        b"caf=C3=A9 tr=\r\n=C3=A8s",
        b"Content-Transfer-Encoding: quoted-printable",
    )
    pdf = leaf(b"application/pdf", b"%PDF=00=FF", b"Content-Transfer-Encoding: quoted-printable")
    msg = parse(multipart(text, pdf))
    assert msg.text_body == "café très"
    assert msg.attachments[0].content == b"%PDF\x00\xff"


def test_binary_8bit_attachment_is_kept_byte_for_byte() -> None:
    data = bytes(range(1, 256)).replace(b"\n", b"").replace(b"\r", b"")
    msg = parse(
        multipart(leaf(b"application/octet-stream", data, b"Content-Transfer-Encoding: binary"))
    )
    assert msg.attachments[0].content == data


@pytest.mark.parametrize(
    ("ctype", "payload", "text"),
    [
        (b"text/plain; charset=windows-1252", b"\x80 \x93ok\x94", "€ “ok”"),
        (b"text/plain; charset=utf-8", b"bad \xff byte", "bad \ufffd byte"),
        (b"text/plain; charset=us-ascii", "mislabelled é".encode(), "mislabelled é"),
        (b"text/plain", "no charset é".encode("latin-1"), "no charset é"),
        (b"text/plain; charset=punycode", b"abc-\xe9", "abc-é"),  # not a mail charset
        (b'text/plain; charset="x-bogus"', "é".encode(), "é"),
        (b"text/plain; charset*=utf-8''utf-8", "é".encode(), "é"),
    ],
)
def test_body_charsets(ctype: bytes, payload: bytes, text: str) -> None:
    assert parse(multipart(leaf(ctype, payload))).text_body == text


def test_digest_parts_default_to_messages() -> None:
    raw = (
        HEAD + b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nFrom: x@y.example\r\nSubject: inner\r\n\r\ndigest text\r\n--d--\r\n"
    )
    body = parse(raw).text_body
    assert body.endswith("Subject: inner\n\ndigest text")


def test_base64_attached_message_is_decoded_then_walked() -> None:
    inner = b"From: x@y.example\r\nContent-Type: application/pdf\r\n\r\n%PDF"
    part = leaf(b"message/rfc822", base64.encodebytes(inner), b"Content-Transfer-Encoding: base64")
    msg = parse(multipart(part))
    assert [a.content for a in msg.attachments] == [b"%PDF"]


def test_attached_message_with_html_only_body() -> None:
    inner = (
        b"From: x@y.example\r\nSubject: =?utf-8?q?r=C3=A9ponse?=\r\n"
        b"Content-Type: text/html\r\n\r\n<p>inner</p>"
    )
    msg = parse(multipart(leaf(b"text/plain", b"outer"), leaf(b"message/rfc822", inner)))
    assert msg.text_body == (
        "outer\n\n---------- Attached message ----------\n"
        "From: x@y.example\nSubject: réponse\n\ninner"
    )


def test_lf_and_crlf_give_the_same_result() -> None:
    raw = multipart(leaf(b"text/plain", b"line 1\r\nline 2"), leaf(b"application/pdf", b"%PDF"))
    crlf, lf = parse(raw), parse(raw.replace(b"\r\n", b"\n"))
    assert (crlf.text_body, crlf.subject) == (lf.text_body, lf.subject)
    assert [a.content for a in crlf.attachments] == [a.content for a in lf.attachments] == [b"%PDF"]
