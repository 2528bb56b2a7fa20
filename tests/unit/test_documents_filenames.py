"""Filename hygiene: untrusted names become names safe on any desktop."""

from __future__ import annotations

import pytest

from gateway.ingest.documents import (
    DOCX,
    JPEG,
    PDF,
    TEXT,
    UNKNOWN,
    sanitise_filename,
)


@pytest.mark.parametrize(
    ("name", "media_type", "expected"),
    [
        ("rapport.pdf", PDF, "rapport.pdf"),
        ("Relevé 2024.PDF", PDF, "Relevé 2024.PDF"),
        ("photo.JPEG", JPEG, "photo.JPEG"),
        ("photo.jpg", JPEG, "photo.jpg"),
        ("notes.csv", TEXT, "notes.csv"),
        ("archive.tar.gz", UNKNOWN, "archive.tar.gz"),
    ],
)
def test_documents_filename_keeps_good_names(name: str, media_type: str, expected: str) -> None:
    assert sanitise_filename(name, 1, media_type) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd.pdf", "passwd.pdf"),
        ("C:\\Users\\greffe\\rapport.pdf", "rapport.pdf"),
        ("..\\..\\windows\\system32\\x.pdf", "x.pdf"),
        ("dossier/", "document-4.pdf"),
        ("/", "document-4.pdf"),
    ],
)
def test_documents_filename_drops_paths(name: str, expected: str) -> None:
    assert sanitise_filename(name, 4, PDF) == expected


def test_documents_filename_no_separators_or_forbidden_chars() -> None:
    result = sanitise_filename('a<b>c:d"e|f?g*h.pdf', 1, PDF)
    assert result == "a_b_c_d_e_f_g_h.pdf"
    assert sanitise_filename("rapport.pdf:Zone.Identifier", 1, PDF) == (
        "rapport.pdf_Zone.Identifier.pdf"
    )


def test_documents_filename_drops_controls_and_bidi() -> None:
    assert sanitise_filename("rap\x00port\x1b[2J.pdf", 1, PDF) == "rapport[2J.pdf"
    # U+202E RIGHT-TO-LEFT OVERRIDE would display "facture‮fdp.exe" as "factureexe.pdf".
    assert sanitise_filename("facture\u202efdp.exe", 1, PDF) == "facturefdp.exe.pdf"
    assert sanitise_filename("a\tb\nc\u2028d.pdf", 1, PDF) == "a b cd.pdf"
    assert sanitise_filename("a\u00a0\u00a0b.pdf", 1, PDF) == "a b.pdf"


def test_documents_filename_strips_dots_and_spaces() -> None:
    assert sanitise_filename(".bashrc", 1, TEXT) == "bashrc.txt"
    assert sanitise_filename("...rapport.pdf", 1, PDF) == "rapport.pdf"
    assert sanitise_filename("  rapport.pdf . . ", 1, PDF) == "rapport.pdf"
    assert sanitise_filename("rapport. .pdf", 1, PDF) == "rapport.pdf"
    assert sanitise_filename("..", 2, PDF) == "document-2.pdf"


def test_documents_filename_nfc() -> None:
    decomposed = "releve\u0301.pdf"
    assert sanitise_filename(decomposed, 1, PDF) == "relev\u00e9.pdf"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CON.pdf", "_CON.pdf"),
        ("con.pdf", "_con.pdf"),
        ("Aux.tar.pdf", "_Aux.tar.pdf"),
        ("nul", "_nul.pdf"),
        ("PRN .pdf", "_PRN.pdf"),
        ("COM1.pdf", "_COM1.pdf"),
        ("com9.PDF", "_com9.PDF"),
        ("LPT1.pdf", "_LPT1.pdf"),
        ("LPT9", "_LPT9.pdf"),
        ("COM¹.pdf", "_COM¹.pdf"),
        ("CONSOLE.pdf", "CONSOLE.pdf"),
        ("COM10.pdf", "COM10.pdf"),
        ("ICON.pdf", "ICON.pdf"),
    ],
)
def test_documents_filename_windows_reserved(name: str, expected: str) -> None:
    assert sanitise_filename(name, 1, PDF) == expected


def test_documents_filename_empty_gets_numbered_name() -> None:
    assert sanitise_filename(None, 3, PDF) == "document-3.pdf"
    assert sanitise_filename("", 5, DOCX) == "document-5.docx"
    assert sanitise_filename("   ", 6, JPEG) == "document-6.jpg"
    assert sanitise_filename("\u202e\x00", 7, TEXT) == "document-7.txt"
    assert sanitise_filename(None, 8, UNKNOWN) == "document-8"


def test_documents_filename_extension_agrees_with_type() -> None:
    assert sanitise_filename("rapport", 1, PDF) == "rapport.pdf"
    assert sanitise_filename("photo.png", 1, JPEG) == "photo.png.jpg"
    assert sanitise_filename("run.bat", 1, TEXT) == "run.bat.txt"
    assert sanitise_filename("invoice.pdf.exe", 1, PDF) == "invoice.pdf.exe.pdf"
    assert sanitise_filename("rapport.", 1, PDF) == "rapport.pdf"


def test_documents_filename_length_keeps_extension() -> None:
    result = sanitise_filename("a" * 300 + ".pdf", 1, PDF)
    assert len(result) == 120
    assert result == "a" * 116 + ".pdf"
    added = sanitise_filename("é" * 300, 1, DOCX)
    assert len(added) == 120 and added.endswith(".docx")


def test_documents_filename_truncation_leaves_no_trailing_dot() -> None:
    result = sanitise_filename("a" * 115 + "." + "b" * 50 + ".pdf", 1, PDF)
    assert len(result) <= 120
    assert result.endswith(".pdf") and not result.endswith("..pdf")
    assert result == "a" * 115 + ".pdf"


def test_documents_filename_always_safe() -> None:
    nasty = ["../" * 50, "\\\\server\\share\\x", ". .", "CON", "\x7f", "a/b\\c", "ÿ" * 500]
    for name in nasty:
        for media_type in (PDF, TEXT, UNKNOWN):
            result = sanitise_filename(name, 9, media_type)
            assert result and len(result) <= 120
            assert "/" not in result and "\\" not in result
            assert not result.startswith(".") and not result.endswith((".", " "))
            assert result.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}
