"""The documents policy: allow-list, size and count limits, refusal messages."""

from __future__ import annotations

import hashlib

import pytest

from gateway.errors import DocumentRefused, MessageRefused
from gateway.ingest.documents import (
    DEFAULT_ALLOWED_TYPES,
    PDF,
    TEXT,
    CheckedDocument,
    DocumentPolicy,
    check_documents,
)
from tests.fixtures.pdfs import plain_pdf

PDF_BYTES = plain_pdf()
EXE_BYTES = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56
POLICY = DocumentPolicy(
    allowed_types=DEFAULT_ALLOWED_TYPES, max_document_bytes=1000, max_documents=30
)
assert len(PDF_BYTES) < 1000


def test_documents_policy_accepts_and_describes() -> None:
    checked = check_documents(
        POLICY,
        [
            ("rapport.pdf", "application/PDF; name=rapport.pdf", PDF_BYTES),
            (None, None, b"bonjour\n"),
            ("photo.pdf", "application/pdf", b"texte, pas un PDF\n"),
        ],
    )
    assert checked == [
        CheckedDocument(
            index=1,
            original_filename="rapport.pdf",
            filename="rapport.pdf",
            declared_type="application/pdf",
            detected_type=PDF,
            size=len(PDF_BYTES),
            sha256=hashlib.sha256(PDF_BYTES).hexdigest(),
        ),
        CheckedDocument(
            index=2,
            original_filename=None,
            filename="document-2.txt",
            declared_type=None,
            detected_type=TEXT,
            size=8,
            sha256=hashlib.sha256(b"bonjour\n").hexdigest(),
        ),
        CheckedDocument(
            index=3,
            original_filename="photo.pdf",
            filename="photo.pdf.txt",
            declared_type="application/pdf",
            detected_type=TEXT,
            size=18,
            sha256=hashlib.sha256(b"texte, pas un PDF\n").hexdigest(),
        ),
    ]


def test_documents_policy_no_documents() -> None:
    assert check_documents(POLICY, []) == []


def test_documents_policy_refuses_executable_named() -> None:
    docs = [("a.pdf", "application/pdf", PDF_BYTES), ("setup.exe", "application/pdf", EXE_BYTES)]
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, docs)
    assert caught.value.message == (
        'document 2 "setup.exe": type application/x-executable is not allowed'
    )
    assert isinstance(caught.value, MessageRefused)


def test_documents_policy_type_is_sniffed_not_declared() -> None:
    with pytest.raises(DocumentRefused, match="type application/x-executable"):
        check_documents(POLICY, [("facture.pdf", "application/pdf", EXE_BYTES)])


def test_documents_policy_refuses_too_large() -> None:
    big = PDF_BYTES + b"\n" * (1001 - len(PDF_BYTES))  # line ends may follow %%EOF
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, [("gros.pdf", None, big)])
    assert caught.value.message == 'document 1 "gros.pdf" is larger than 1000 bytes'
    exact = big[:1000]
    assert check_documents(POLICY, [("juste.pdf", None, exact)])[0].size == 1000


def test_documents_policy_refuses_too_many() -> None:
    docs = [(f"{index}.txt", None, b"x") for index in range(31)]
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, docs)
    assert caught.value.message == "too many documents: 31 > 30"
    assert len(check_documents(POLICY, docs[:30])) == 30


def test_documents_policy_custom_allow_list() -> None:
    only_pdf = DocumentPolicy(frozenset({PDF}), max_document_bytes=1000, max_documents=2)
    with pytest.raises(DocumentRefused, match=r'document 1 "notes\.txt": type text/plain'):
        check_documents(only_pdf, [("notes.txt", "text/plain", b"hello\n")])


def test_documents_policy_message_is_one_ascii_line() -> None:
    name = "Relevé\r\n250 OK\u202e «père» \"x\" \\ 日本" + "é" * 200 + ".exe"
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, [(name, None, EXE_BYTES)])
    message = caught.value.message
    assert message.isascii() and message.isprintable()
    assert "\r" not in message and "\n" not in message
    quoted = message.split(" ", 2)[2].rsplit(":", 1)[0]
    assert quoted.startswith('"Releve??250 OK?') and quoted.endswith('..."')
    assert quoted.count('"') == 2 and "\\" not in quoted
    assert len(quoted) <= 62
    assert message.endswith(": type application/x-executable is not allowed")


def test_documents_policy_unnamed_document_in_message() -> None:
    with pytest.raises(DocumentRefused) as caught:
        check_documents(POLICY, [(None, None, EXE_BYTES)])
    assert caught.value.message == (
        "document 1 (unnamed): type application/x-executable is not allowed"
    )


def test_documents_policy_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DocumentPolicy(DEFAULT_ALLOWED_TYPES, max_document_bytes=0, max_documents=1)
    with pytest.raises(ValueError):
        DocumentPolicy(DEFAULT_ALLOWED_TYPES, max_document_bytes=1, max_documents=0)
    with pytest.raises(ValueError):
        DocumentPolicy(DEFAULT_ALLOWED_TYPES, 1, 1, max_pdf_objects=0)
