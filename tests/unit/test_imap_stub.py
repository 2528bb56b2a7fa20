"""The stub builder: original headers minus content headers, a note with hashes, no documents."""

from __future__ import annotations

import base64
import hashlib
from email.message import EmailMessage

from gateway.imap.stub import (
    STUB_HEADER,
    build_stub,
    is_stub,
    recipient_addresses,
    split_header,
    stub_marker,
)
from gateway.ingest.mime import MimeLimits, parse_message

PDF = b"%PDF-1.4\n" + b"contenu du document\n" * 30 + b"%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


def _message(body: str = "Bonjour,\nVoici le compte.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Tuteur <tuteur@exemple.fr>"
    msg["To"] = "depot+7K3QDM2X9A@greffe.example"
    msg["Subject"] = "Compte de gestion"
    msg["Message-ID"] = "<abc@exemple.fr>"
    msg["DKIM-Signature"] = "v=1; a=rsa-sha256; d=exemple.fr; s=s1; b=AAAA"
    msg.set_content(body)
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="compte 2024.pdf")
    msg.add_attachment(PNG, maintype="image", subtype="png", filename="../../scan")
    received = (
        b"Received: from mx.exemple.fr by imap.court.example;\r\n"
        b" Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    )
    return received + msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def _stub(raw: bytes, references: list[str]) -> bytes:
    parsed = parse_message(raw, MimeLimits(), id_domain="greffe.example")
    return build_stub(raw, parsed, references)


def test_imap_stub_lists_reference_names_sizes_and_hashes() -> None:
    stub = _stub(_message(), ["TJ-LYON-2026-000001/1"])
    text = stub.decode("utf-8")
    assert "TJ-LYON-2026-000001/1" in text
    assert hashlib.sha256(PDF).hexdigest() in text and hashlib.sha256(PNG).hexdigest() in text
    assert "compte 2024.pdf" in text and "scan.png" in text  # the names the receipt gives
    assert f"{len(PDF)}" in text.replace("\u00a0", "")
    assert "Voici le compte." in text


def test_imap_stub_carries_no_document_bytes() -> None:
    raw = _message()
    stub = _stub(raw, ["R/1"])
    for content in (PDF, PNG):
        assert base64.b64encode(content)[:60] not in stub.replace(b"\r\n", b"")
        assert content[:20] not in stub
    assert base64.b64encode(PDF)[:60] in raw.replace(b"\r\n", b"")  # the test can fail
    reparsed = parse_message(stub, MimeLimits(), id_domain="greffe.example")
    assert reparsed.attachments == []


def test_imap_stub_keeps_headers_but_not_content_or_signature_headers() -> None:
    stub = _stub(_message(), ["R/1"])
    fields, _ = split_header(stub)
    names = [f.name for f in fields]
    for kept in ("from", "to", "subject", "message-id", "received"):
        assert kept in names
    assert names.count("content-type") == 1 and "dkim-signature" not in names
    received = next(f for f in fields if f.name == "received")
    assert b"\r\n Mon, 1 Jan 2024" in received.raw  # folded lines stay as they were
    content_type = next(f for f in fields if f.name == "content-type")
    assert content_type.raw == b"Content-Type: text/plain; charset=utf-8"


def test_imap_stub_is_recognised_and_a_forged_marker_is_not() -> None:
    raw = _message()
    stub = _stub(raw, ["R/1"])
    assert is_stub(stub) and not is_stub(raw)
    digest = hashlib.sha256(raw).hexdigest()
    assert stub_marker(digest).encode() in stub
    forged = f"{STUB_HEADER}: sha256=0\r\n".encode() + raw
    assert not is_stub(forged)  # a multipart message with documents is never a stub


def test_imap_stub_long_lines_fall_back_to_quoted_printable() -> None:
    stub = _stub(_message(body="x" * 5000 + "\n"), ["R/1"])
    assert b"Content-Transfer-Encoding: quoted-printable" in stub
    assert max(len(line) for line in stub.split(b"\r\n")) <= 998
    short = _stub(_message(), ["R/1"])
    assert b"Content-Transfer-Encoding: 8bit" in short


def test_imap_recipients_most_specific_first() -> None:
    raw = (
        b"Delivered-To: depot+ABC@greffe.example\r\n"
        b"To: Greffe <greffe@court.example>, depot@greffe.example\r\n"
        b"Cc: =?utf-8?q?Etat?= <etat@greffe.example>\r\n"
        b"From: a@b.fr\r\n\r\nbody\r\n"
    )
    assert recipient_addresses(raw) == [
        "depot+ABC@greffe.example",
        "greffe@court.example",
        "depot@greffe.example",
        "etat@greffe.example",
    ]
