"""Media types are sniffed from content: office files, images, text, executables, archives."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib

import pytest

from gateway.ingest.documents import (
    DEFAULT_ALLOWED_TYPES,
    DOCM,
    DOCX,
    EMPTY,
    EXECUTABLE,
    JPEG,
    ODF_MACROS,
    ODS,
    ODT,
    PDF,
    PNG,
    TEXT,
    TIFF,
    UNKNOWN,
    XLSM,
    XLSX,
    ZIP,
    sniff_media_type,
)

MINIMAL_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n"
    b"0000000052 00000 n \n0000000101 00000 n \n"
    b"trailer<</Size 4/Root 1 0 R>>\nstartxref\n164\n%%EOF\n"
)


def png_1x1() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def opendocument(mimetype: str, extra: dict[str, bytes] | None = None) -> bytes:
    """An OpenDocument package as LibreOffice writes it: 'mimetype' first and stored."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", mimetype, compress_type=zipfile.ZIP_STORED)
        archive.writestr(
            "META-INF/manifest.xml",
            '<?xml version="1.0"?><manifest:manifest/>',
            compress_type=zipfile.ZIP_DEFLATED,
        )
        archive.writestr("content.xml", "<office:document-content/>", zipfile.ZIP_DEFLATED)
        for name, body in (extra or {}).items():
            archive.writestr(name, body, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def ooxml(main_folder: str, main_part: str, extra: dict[str, bytes] | None = None) -> bytes:
    """A minimal OOXML package: content types, relationships and the main part."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships/>')
        archive.writestr(f"{main_folder}/{main_part}", "<document/>")
        for name, body in (extra or {}).items():
            archive.writestr(name, body)
    return buffer.getvalue()


def plain_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in entries.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def test_documents_sniff_minimal_pdf() -> None:
    assert sniff_media_type(MINIMAL_PDF) == PDF


def test_documents_sniff_pdf_needs_header_at_start() -> None:
    # A PDF header hidden after other content is not trusted as a PDF.
    assert sniff_media_type(b"MZ\x90\x00" + MINIMAL_PDF) == EXECUTABLE


def test_documents_sniff_images() -> None:
    assert sniff_media_type(png_1x1()) == PNG
    assert sniff_media_type(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01") == JPEG
    assert sniff_media_type(b"II*\x00\x08\x00\x00\x00" + b"\x00" * 16) == TIFF
    assert sniff_media_type(b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 16) == TIFF


def test_documents_sniff_opendocument_text_and_spreadsheet() -> None:
    assert sniff_media_type(opendocument(ODT)) == ODT
    assert sniff_media_type(opendocument(ODS)) == ODS


def test_documents_sniff_other_opendocument_named_but_not_allowed() -> None:
    presentation = "application/vnd.oasis.opendocument.presentation"
    assert sniff_media_type(opendocument(presentation)) == presentation
    assert presentation not in DEFAULT_ALLOWED_TYPES


def test_documents_sniff_opendocument_with_macros() -> None:
    with_basic = opendocument(ODT, {"Basic/Standard/Module1.xml": b"<script/>"})
    with_scripts = opendocument(ODS, {"Scripts/python/evil.py": b"import os"})
    assert sniff_media_type(with_basic) == ODF_MACROS
    assert sniff_media_type(with_scripts) == ODF_MACROS
    assert ODF_MACROS not in DEFAULT_ALLOWED_TYPES


def test_documents_sniff_mimetype_entry_must_be_first() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("content.xml", "<x/>")
        archive.writestr("mimetype", ODT)
    assert sniff_media_type(buffer.getvalue()) == ZIP


def test_documents_sniff_zip_with_odd_mimetype_is_zip() -> None:
    assert sniff_media_type(opendocument("application/x-msdownload")) == ZIP
    assert sniff_media_type(opendocument(ODT + "\n")) == ZIP


def test_documents_sniff_ooxml() -> None:
    assert sniff_media_type(ooxml("word", "document.xml")) == DOCX
    assert sniff_media_type(ooxml("xl", "workbook.xml")) == XLSX


def test_documents_sniff_ooxml_with_macros_is_not_docx() -> None:
    docm = ooxml("word", "document.xml", {"word/vbaProject.bin": b"\xd0\xcf\x11\xe0"})
    xlsm = ooxml("xl", "workbook.xml", {"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0"})
    assert sniff_media_type(docm) == DOCM
    assert sniff_media_type(xlsm) == XLSM
    assert DOCM not in DEFAULT_ALLOWED_TYPES and XLSM not in DEFAULT_ALLOWED_TYPES


def test_documents_sniff_zip_without_office_parts_is_zip() -> None:
    assert sniff_media_type(plain_zip({"setup.exe": b"MZ\x00\x00"})) == ZIP
    assert sniff_media_type(plain_zip({"word/document.xml": b"<x/>"})) == ZIP
    assert sniff_media_type(ooxml("ppt", "presentation.xml")) == ZIP
    assert sniff_media_type(plain_zip({})) == ZIP


def test_documents_sniff_truncated_zip_is_zip() -> None:
    assert sniff_media_type(ooxml("word", "document.xml")[:40]) == ZIP
    assert sniff_media_type(b"PK\x03\x04") == ZIP


def _deflated_zeros(archive: zipfile.ZipFile, name: str, size: int) -> None:
    chunk = b"\x00" * (1 << 20)
    with archive.open(name, "w", force_zip64=True) as stream:
        for _ in range(size // len(chunk)):
            stream.write(chunk)


def _bomb(first_name: str, size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        _deflated_zeros(archive, first_name, size)
        archive.writestr("[Content_Types].xml", "<Types/>")
        _deflated_zeros(archive, "word/document.xml", size)
    return buffer.getvalue()


def _peak_bytes_while_sniffing(data: bytes) -> tuple[str, int, float]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        media_type = sniff_media_type(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return media_type, peak, time.perf_counter() - started


def test_documents_sniff_zip_bomb_reads_directory_only() -> None:
    # 2 x 64 MiB of zeros squeezed into ~130 KiB: sniffing must not inflate it.
    bomb = _bomb("payload.bin", 64 << 20)
    assert len(bomb) < 1 << 20
    media_type, peak, elapsed = _peak_bytes_while_sniffing(bomb)
    assert media_type == DOCX
    assert peak < 4 << 20
    assert elapsed < 2.0


def test_documents_sniff_mimetype_bomb_is_bounded() -> None:
    # A huge 'mimetype' entry whose directory record lies about its size: the
    # sniffer must read only its first bytes.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        _deflated_zeros(archive, "mimetype", 64 << 20)
        archive.writestr("content.xml", "<x/>")
    data = bytearray(buffer.getvalue())
    directory = data.index(b"PK\x01\x02")
    assert struct.unpack_from("<I", data, directory + 24)[0] == 64 << 20
    struct.pack_into("<I", data, directory + 24, len(ODT))  # lie: uncompressed size
    media_type, peak, _ = _peak_bytes_while_sniffing(bytes(data))
    assert media_type == ZIP
    assert peak < 4 << 20


def test_documents_sniff_huge_central_directory_is_zip_unparsed() -> None:
    entries = {f"f{index}": b"" for index in range(10_001)}
    assert sniff_media_type(plain_zip(entries)) == ZIP


@pytest.mark.parametrize(
    "data",
    [
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48,
        b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56,
        b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 24,
        b"\xfe\xed\xfa\xce" + b"\x00" * 24,
        b"\xca\xfe\xba\xbe\x00\x00\x00\x02",
        b"#!/bin/sh\nrm -rf ~\n",
        b"#!/usr/bin/env python3\nprint('x')\n",
    ],
)
def test_documents_sniff_executables(data: bytes) -> None:
    assert sniff_media_type(data) == EXECUTABLE


def test_documents_sniff_text_starting_with_mz_is_text() -> None:
    assert sniff_media_type(b"MZ Avocats\nCompte de gestion 2024\n") == TEXT


def test_documents_sniff_archives() -> None:
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"hi"))
    assert sniff_media_type(gzip.compress(b"x" * 100)) == "application/gzip"
    assert sniff_media_type(bz2.compress(b"x" * 100)) == "application/x-bzip2"
    assert sniff_media_type(lzma.compress(b"x" * 100)) == "application/x-xz"
    assert sniff_media_type(tar_buffer.getvalue()) == "application/x-tar"
    assert sniff_media_type(b"7z\xbc\xaf\x27\x1c\x00\x04") == "application/x-7z-compressed"
    assert sniff_media_type(b"Rar!\x1a\x07\x01\x00") == "application/vnd.rar"
    assert sniff_media_type(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") == "application/x-ole-storage"


@pytest.mark.parametrize(
    "data",
    [
        "Compte de gestion — exercice 2024\nSolde : 1 234,56 €\n".encode(),
        "\ufeffUTF-8 avec BOM, éèà\r\n".encode(),
        "Relevé de comptes, père et mère\n".encode("latin-1"),
        "Total : 100 € — fin\n".encode("cp1252"),
        "Notepad « Unicode » : relevé\r\n".encode("utf-16"),
        b"date;montant\n2024-01-01;12,50\n",
        b"BZ\nh",
        b"a\tb\x0cc\x1a",
    ],
)
def test_documents_sniff_text(data: bytes) -> None:
    assert sniff_media_type(data) == TEXT


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        (b"<!DOCTYPE html><script>alert(1)</script>", "text/html"),
        (b"  <html><body>x</body></html>", "text/html"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (b"<svg onload=alert(1)>", "image/svg+xml"),
        (b'<?xml version="1.0"?><root/>', "application/xml"),
        (b"{\\rtf1\\ansi hello}", "application/rtf"),
    ],
)
def test_documents_sniff_markup_is_not_plain_text(data: bytes, media_type: str) -> None:
    assert sniff_media_type(data) == media_type
    assert media_type not in DEFAULT_ALLOWED_TYPES


def test_documents_sniff_binary_is_unknown() -> None:
    noise = random.Random(7).randbytes(4096)
    assert sniff_media_type(b"\x01" + noise) == UNKNOWN
    assert sniff_media_type(b"texte\x00avec NUL") == UNKNOWN
    assert sniff_media_type(b"\x1b[31m" * 50 + b"x" * 100) == UNKNOWN
    assert sniff_media_type(b"\xff\xfe" + b"\x00\xd8") == UNKNOWN  # lone surrogate


def test_documents_sniff_empty() -> None:
    assert sniff_media_type(b"") == EMPTY
    assert EMPTY not in DEFAULT_ALLOWED_TYPES


def test_documents_default_allowed_types() -> None:
    assert {PDF, PNG, JPEG, TIFF, ODT, ODS, DOCX, XLSX, TEXT} == DEFAULT_ALLOWED_TYPES
    assert EXECUTABLE not in DEFAULT_ALLOWED_TYPES and ZIP not in DEFAULT_ALLOWED_TYPES
