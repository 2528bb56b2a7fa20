"""PDFs are parsed with qpdf: polyglots and unreadable files refused, active content named."""

from __future__ import annotations

import pytest

from gateway.errors import DocumentRefused
from gateway.ingest.documents import (
    DEFAULT_ALLOWED_TYPES,
    PDF,
    DocumentPolicy,
    check_documents,
    check_pdf_tail,
)
from gateway.ingest.pdfcheck import WARNINGS, inspect_pdf
from tests.fixtures import pdfs

POLICY = DocumentPolicy(DEFAULT_ALLOWED_TYPES, max_document_bytes=10_000_000, max_documents=5)


def refusal(data: bytes, name: str = "compte.pdf", policy: DocumentPolicy = POLICY) -> str:
    with pytest.raises(DocumentRefused) as caught:
        check_documents(policy, [(name, "application/pdf", data)])
    return caught.value.message


def warnings_of(data: bytes) -> tuple[str, ...]:
    [checked] = check_documents(POLICY, [("piece.pdf", "application/pdf", data)])
    assert checked.detected_type == PDF
    return checked.warnings


def test_pdf_plain_is_accepted_without_warnings() -> None:
    assert warnings_of(pdfs.plain_pdf(pages=3)) == ()
    assert warnings_of(pdfs.goto_open_action_pdf()) == ()  # opening at a page is no action


@pytest.mark.parametrize(
    "padding", [b"\n", b"\r\n", b"\x00" * 512, b"  \n\x0c\t", b"\n% commentaire\n"]
)
def test_pdf_padding_after_eof_is_accepted(padding: bytes) -> None:
    assert warnings_of(pdfs.plain_pdf() + padding) == ()


@pytest.mark.parametrize("glue", [b"", b"\n", b"\x00" * 16, b"\x01\x02 leurre \x03"])
def test_pdf_with_zip_appended_is_refused(glue: bytes) -> None:
    message = refusal(pdfs.plain_pdf() + glue + pdfs.zip_archive())
    assert message == ('document 1 "compte.pdf": data after the end of the PDF is application/zip')


def test_pdf_with_zip_appended_then_a_new_eof_is_refused() -> None:
    # %%EOF after the archive hides it from the tail check; a ZIP reader still finds it.
    data = pdfs.plain_pdf() + pdfs.zip_archive() + b"\nstartxref\n0\n%%EOF\n"
    assert refusal(data) == 'document 1 "compte.pdf": a ZIP archive is hidden in the PDF'


@pytest.mark.parametrize(
    "payload", [pdfs.elf_executable(), pdfs.pe_executable(), b"\x01junk" + pdfs.pe_executable()]
)
def test_pdf_with_executable_appended_is_refused(payload: bytes) -> None:
    message = refusal(pdfs.plain_pdf() + b"\n" + payload)
    assert message.endswith("data after the end of the PDF is application/x-executable")


def test_pdf_with_markup_appended_is_refused() -> None:
    message = refusal(pdfs.plain_pdf() + b"<html><script>alert(1)</script></html>")
    assert message.endswith("data after the end of the PDF is text/html")


def test_pdf_truncated_is_refused_naming_it() -> None:
    assert refusal(pdfs.truncated_pdf(), "relevé.pdf") == (
        'document 1 "releve.pdf": the PDF is truncated (no %%EOF)'
    )


def test_pdf_garbage_qpdf_cannot_read_is_refused_naming_it() -> None:
    assert refusal(pdfs.garbage_pdf()) == 'document 1 "compte.pdf": not a readable PDF'


def test_pdf_unreadable_message_is_ours_not_qpdfs() -> None:
    # qpdf's own text names offsets and objects of the file: never echoed to the sender.
    data = b"%PDF-1.7\n1 0 obj<</Type/Catalog/Pages 9 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF"
    assert refusal(data) == 'document 1 "compte.pdf": not a readable PDF'


def test_pdf_needing_a_password_is_refused() -> None:
    assert refusal(pdfs.password_pdf()).endswith(": the PDF is protected by a password")


def test_pdf_with_owner_password_only_is_inspected() -> None:
    assert warnings_of(pdfs.owner_password_pdf()) == ()


def test_pdf_object_stream_bomb_is_refused_not_inflated() -> None:
    # 32 MiB once inflated, over the 16 MiB qpdf may inflate: the hidden objects are unread.
    assert refusal(pdfs.object_stream_bomb()) == 'document 1 "compte.pdf": not a readable PDF'


def test_pdf_with_too_many_objects_is_refused() -> None:
    small = DocumentPolicy(DEFAULT_ALLOWED_TYPES, 10_000_000, 5, max_pdf_objects=10)
    assert check_documents(small, [("a.pdf", None, pdfs.plain_pdf(pages=2))])
    message = refusal(pdfs.plain_pdf(pages=20), policy=small)
    assert message == 'document 1 "compte.pdf": the PDF has more than 10 objects'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (pdfs.javascript_pdf(), ("javascript", "open-action")),
        (pdfs.compressed_javascript_pdf(), ("javascript",)),
        (pdfs.launch_pdf(), ("launch-action",)),
        (pdfs.launch_pdf(direct_annotation=True), ("launch-action",)),
        (pdfs.embedded_file_pdf(), ("embedded-file",)),
        (pdfs.submit_form_open_action_pdf(), ("open-action",)),
        (pdfs.xfa_pdf(), ("xfa",)),
    ],
    ids=["js", "js-in-object-stream", "launch", "launch-inline", "attachment", "submit", "xfa"],
)
def test_pdf_active_content_is_accepted_and_named(data: bytes, expected: tuple[str, ...]) -> None:
    assert warnings_of(data) == expected
    assert set(expected) <= set(WARNINGS)


def test_pdf_hex_escaped_names_are_still_recognised() -> None:
    # /J#61vaScript is /JavaScript to every reader; a byte search would miss it.
    data = pdfs.javascript_pdf().replace(b"/JavaScript", b"/J#61vaScript")
    assert b"/JavaScript" not in data
    assert "javascript" in inspect_pdf(data)


def test_pdf_tail_check_alone() -> None:
    check_pdf_tail(pdfs.plain_pdf() + b"\r\n")
    with pytest.raises(DocumentRefused, match="no %%EOF"):
        check_pdf_tail(b"%PDF-1.4\n")


def test_non_pdf_documents_carry_no_warnings() -> None:
    [checked] = check_documents(POLICY, [("notes.txt", None, b"bonjour\n")])
    assert checked.warnings == ()
