"""MAIL FROM from a message's headers: the cheap parse finds what the whole-message parse found."""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import default
from pathlib import Path

import pytest

from gateway.outbox.worker import ehlo_name, envelope_sender
from tests.fixtures.eml import make_corpus

CORPUS = Path(make_corpus.__file__).parent
BODY = b"Numero de saisie : 7K3QD-M2X9A\r\nFrom: body@not.a.header\r\n"
SAMPLES = {
    "plain": b"From: Greffe <noreply@greffe.example>\r\nTo: t@f.example\r\n\r\n" + BODY,
    "lf only": b"From: noreply@greffe.example\nSubject: x\n\nFrom: other@x.example\n",
    "no from": b"To: t@f.example\r\nSubject: x\r\n\r\n" + BODY,
    "null": b"",
    "headers only": b"Subject: x\r\nFrom: last@greffe.example\r\n",
    "no headers": b"\r\n\r\nFrom: body@x.example\r\n",
    "blank first": b"\r\nFrom: body@x.example\r\n\r\n",
    "folded": b'Subject: x\r\nFrom: "Greffe du tribunal"\r\n <folded@greffe.example>\r\n\r\nb\r\n',
    "comment": b'From: "Greffe, Paris" <c@greffe.example> (le greffe)\r\n\r\n' + BODY,
    "two addresses": b"From: first@a.example, second@b.example\r\n\r\n" + BODY,
    "empty group": b"From: undisclosed-recipients:;\r\n\r\n" + BODY,
    "two from": b"From: one@a.example\r\nFrom: two@b.example\r\n\r\n" + BODY,
    "encoded word": b"From: =?utf-8?q?Gr=C3=A9ffe?= <ew@greffe.example>\r\n\r\n" + BODY,
    "8-bit name": "From: Hélène <h@greffe.example>\r\n\r\n".encode("latin-1") + BODY,
    "mixed endings": b"Subject: x\n\r\nFrom: late@x.example\r\n\r\n",
    "bare cr": b"Subject: x\r\rFrom: late@x.example\r\n\r\n",
    "unix from": b"From someone Mon Nov 23 10:00:00 2026\nFrom: u@greffe.example\n\nb\n",
    "not a header": b"Subject: x\r\nnot a header line\r\nFrom: after@x.example\r\n\r\n",
    "garbage": b"From: <<>>@@\r\n\r\n",
}


def whole_message_sender(message: bytes) -> str:
    """The former implementation: the whole message through the default policy."""
    headers = BytesHeaderParser(policy=default).parsebytes(message)
    addresses = getattr(headers.get("From"), "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_envelope_sender_matches_the_whole_message_parse(name: str) -> None:
    message = SAMPLES[name]

    assert envelope_sender(message) == whole_message_sender(message)
    assert envelope_sender(message) == whole_message_sender(message)  # memoised: same again


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda path: path.name)
def test_envelope_sender_matches_on_the_mime_corpus(path: Path) -> None:
    message = path.read_bytes()

    assert envelope_sender(message) == whole_message_sender(message)


def test_envelope_sender_examples() -> None:
    assert envelope_sender(SAMPLES["plain"]) == "noreply@greffe.example"
    assert envelope_sender(SAMPLES["folded"]) == "folded@greffe.example"
    assert envelope_sender(SAMPLES["two from"]) == "one@a.example"
    assert envelope_sender(SAMPLES["no from"]) == ""  # the null sender
    assert envelope_sender(SAMPLES["lf only"]) == "noreply@greffe.example"


def test_ehlo_name_is_the_host_name_in_idna_or_none() -> None:
    assert ehlo_name("greffe.example") == "greffe.example"
    assert ehlo_name("mx.greffe.example.") == "mx.greffe.example"
    assert ehlo_name("tribunal-évry.example") == "xn--tribunal-vry-jeb.example"
    assert ehlo_name("") is None
    assert ehlo_name("a..b") is None
