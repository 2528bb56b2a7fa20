"""Documents policy: media-type sniffing, the allow-list, limits, PDF checks, filename hygiene."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import DocumentRefused
from gateway.ingest.pdfcheck import DEFAULT_MAX_OBJECTS, inspect_pdf

PDF = "application/pdf"
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOCM = "application/vnd.ms-word.document.macroEnabled.12"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"
ODF_MACROS = "application/x-opendocument-with-macros"
TEXT = "text/plain"
EXECUTABLE = "application/x-executable"
ZIP = "application/zip"
EMPTY = "application/x-empty"
UNKNOWN = "application/octet-stream"

DEFAULT_ALLOWED_TYPES: frozenset[str] = frozenset(
    {PDF, PNG, JPEG, TIFF, ODT, DOCX, ODS, XLSX, TEXT}
)

# Extensions a sanitised filename may keep for each type; the first is added
# when the name has none of them, so what the clerk's desktop opens the file
# with agrees with what was checked (no "notes.bat" that is "text/plain").
EXTENSIONS: dict[str, tuple[str, ...]] = {
    PDF: (".pdf",),
    PNG: (".png",),
    JPEG: (".jpg", ".jpeg", ".jpe"),
    TIFF: (".tif", ".tiff"),
    ODT: (".odt",),
    ODS: (".ods",),
    DOCX: (".docx",),
    XLSX: (".xlsx",),
    TEXT: (".txt", ".text", ".csv", ".log"),
}

_PREFIXES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
    (b"\x7fELF", EXECUTABLE),
    (b"\xfe\xed\xfa\xce", EXECUTABLE),  # Mach-O, 32 and 64 bit, both byte orders
    (b"\xfe\xed\xfa\xcf", EXECUTABLE),
    (b"\xce\xfa\xed\xfe", EXECUTABLE),
    (b"\xcf\xfa\xed\xfe", EXECUTABLE),
    (b"\xca\xfe\xba\xbe", EXECUTABLE),  # Mach-O universal binary (and Java class)
    (b"#!", EXECUTABLE),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    *((b"BZh" + bytes([level]), "application/x-bzip2") for level in b"123456789"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", "application/zstd"),
    (b"MSCF", "application/vnd.ms-cab-compressed"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (b"{\\rtf", "application/rtf"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# zipfile parses the whole central directory into objects: bound it first.
_MAX_ZIP_ENTRIES = 10_000
_MAX_CENTRAL_DIRECTORY = 1 << 20
_MAX_MIMETYPE_BYTES = 100
_EOCD = b"PK\x05\x06"
_ODF_MIMETYPE_RE = re.compile(rb"application/vnd\.oasis\.opendocument\.[a-z-]{1,40}")
# Bytes that do not occur in plain text: C0 controls other than tab, line
# feed, vertical tab, form feed, carriage return and DOS end-of-file, and DEL.
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\x0b\x0c\r\x1a") + b"\x7f"
_MAX_CONTROL_RATIO = 0.01
_MARKUP: tuple[tuple[bytes, str], ...] = (
    (b"<!doctype html", "text/html"),
    (b"<html", "text/html"),
    (b"<svg", "image/svg+xml"),
    (b"<?xml", "application/xml"),
)


def sniff_media_type(data: bytes) -> str:
    """Return the media type of ``data`` from its content alone, never from its name."""
    if not data:
        return EMPTY
    if data.startswith(_ZIP_MAGIC):
        return _sniff_zip(data)
    for magic, media_type in _PREFIXES:
        if data.startswith(magic):
            return media_type
    # A real DOS/PE header is full of zero fields; "MZ" opening a text is a text.
    if data.startswith(b"MZ") and b"\x00" in data[:64]:
        return EXECUTABLE
    if data[257:262] == b"ustar":
        return "application/x-tar"
    return _sniff_text(data) or UNKNOWN


def _sniff_text(data: bytes) -> str | None:
    """Plain text (or markup), in UTF-8, Latin-1/Windows-1252 or BOM-marked UTF-16."""
    if data.startswith(_UTF16_BOMS):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            return None
    return _sniff_markup(data) if _looks_like_text(data) else None


def _looks_like_text(data: bytes) -> bool:
    """No NUL and hardly any control bytes.

    Every byte string decodes as Latin-1, so beyond UTF-8 the test is on
    bytes: binary data is full of NULs and C0 controls, text is not.
    """
    if b"\x00" in data:
        return False
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    return controls <= _MAX_CONTROL_RATIO * len(data)


def _sniff_markup(data: bytes) -> str:
    # Markup would be rendered, scripts included, by whatever opens it.
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for prefix, media_type in _MARKUP:
        if head.startswith(prefix):
            return "image/svg+xml" if b"<svg" in head else media_type
    return TEXT


def _small_central_directory(data: bytes) -> bool:
    """Whether the end-of-central-directory record announces a modest directory."""
    # The record is 22 bytes plus a comment of at most 65535 bytes, at the end;
    # zipfile takes the last signature in that window, and so do we.
    position = data.rfind(_EOCD, max(0, len(data) - 22 - 0xFFFF))
    if position < 0 or position + 22 > len(data):
        return False
    total, size = (int(field) for field in struct.unpack_from("<HI", data, position + 10))
    # ZIP64 (0xFFFF entries) is for huge archives, never an office document.
    return total <= _MAX_ZIP_ENTRIES and size <= _MAX_CENTRAL_DIRECTORY


def _sniff_zip(data: bytes) -> str:
    """Tell office documents from other archives by reading the central directory only."""
    if not _small_central_directory(data):
        return ZIP
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
            if entries and entries[0].filename == "mimetype":
                return _opendocument_type(archive, entries)
            return _ooxml_type(entries)
    except Exception:  # any malformation means "some archive", never a crash
        return ZIP


def _opendocument_type(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo]) -> str:
    first = entries[0]
    if first.file_size > _MAX_MIMETYPE_BYTES:
        return ZIP
    # Bounded read: even a lying header cannot make us inflate more than this.
    with archive.open(first) as stream:
        declared = stream.read(_MAX_MIMETYPE_BYTES + 1)
    if not _ODF_MIMETYPE_RE.fullmatch(declared):
        return ZIP
    if any(entry.filename.startswith(("Basic/", "Scripts/")) for entry in entries):
        return ODF_MACROS
    return declared.decode("ascii")


def _ooxml_type(entries: list[zipfile.ZipInfo]) -> str:
    names = {entry.filename for entry in entries}
    if "[Content_Types].xml" not in names:
        return ZIP
    macros = any(name.lower().endswith("vbaproject.bin") for name in names)
    if any(name.startswith("word/") for name in names):
        return DOCM if macros else DOCX
    if any(name.startswith("xl/") for name in names):
        return XLSM if macros else XLSX
    return ZIP


# A PDF ends at its last %%EOF, and what follows may only be padding. Other readers look
# elsewhere (a ZIP reader from the end of the file, an unpacker or a loader for its magic
# bytes), so one file can be both a valid PDF and an archive: the sniffer sees only the
# first bytes. Binary signatures of 4 bytes or more are searched anywhere after %%EOF.
_PDF_EOF = b"%%EOF"
_PDF_PADDING = b"\x00\t\n\x0c\r "
_HARMLESS_TAIL = frozenset({EMPTY, TEXT, UNKNOWN, PDF})
_TAIL_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    *((magic, kind) for magic, kind in _PREFIXES if len(magic) >= 4 and kind != PDF),
    *((magic, ZIP) for magic in _ZIP_MAGIC),
    (b"PE\x00\x00", EXECUTABLE),  # the header a DOS stub's e_lfanew points to
)
_CENTRAL_DIRECTORY = b"PK\x01\x02"


def check_pdf_tail(data: bytes) -> None:
    """Refuse a PDF without %%EOF, or one with another file after it or readable from its end."""
    end = data.rfind(_PDF_EOF)
    if end < 0:
        raise DocumentRefused("the PDF is truncated (no %%EOF)")
    # Leading padding only: a payload's own trailing zeros are part of how it sniffs.
    tail = data[end + len(_PDF_EOF) :].lstrip(_PDF_PADDING)
    if tail.rstrip(_PDF_PADDING):
        kind = sniff_media_type(tail)
        if kind in _HARMLESS_TAIL:  # a payload after some junk: look for its signature
            kind = next((found for magic, found in _TAIL_SIGNATURES if magic in tail), kind)
        if kind not in _HARMLESS_TAIL:
            raise DocumentRefused(f"data after the end of the PDF is {kind}")
    if _zip_readable_from_end(data):
        raise DocumentRefused("a ZIP archive is hidden in the PDF")


def _zip_readable_from_end(data: bytes) -> bool:
    """Whether a ZIP reader would find an archive here, wherever it starts.

    A reader takes the last end-of-central-directory record in the final
    64 KiB and the central directory just before it; both must be there.
    """
    position = data.rfind(_EOCD, max(0, len(data) - 22 - 0xFFFF))
    if position < 0 or position + 22 > len(data):
        return False
    entries, size = (int(field) for field in struct.unpack_from("<HI", data, position + 10))
    start = position - size
    return entries > 0 and start >= 0 and data[start : start + 4] == _CENTRAL_DIRECTORY


_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {"CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789¹²³"}
)
# Characters Windows refuses in names, and both path separators.
_FORBIDDEN_CHARS = re.compile(r'[<>:"|?*/\\]')
_MAX_FILENAME = 120
_MAX_EXTENSION = 16


def _clean_characters(name: str) -> str:
    """NFC; drop controls and format characters (bidi overrides); blank out the rest."""
    kept = []
    for char in unicodedata.normalize("NFC", name):
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp") and char not in "\t\r\n":
            continue
        kept.append(" " if category == "Zs" or char in "\t\r\n" else char)
    return re.sub(r" {2,}", " ", "".join(kept))


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) + 1 > _MAX_EXTENSION or " " in extension:
        return name, ""
    return stem, "." + extension


def sanitise_filename(name: str | None, index: int, media_type: str) -> str:
    """Return a name safe to write on any desktop, agreeing with ``media_type``.

    The last path component only; no control, bidi or Windows-forbidden
    characters; no leading dots, trailing dots or spaces; no Windows device
    name; at most 120 characters with the extension kept; an extension the
    detected type is opened with (added when missing or different).
    """
    allowed = EXTENSIONS.get(media_type, ())
    base = re.split(r"[/\\]", name or "")[-1]
    cleaned = _FORBIDDEN_CHARS.sub("_", _clean_characters(base)).strip(". ")
    stem, extension = _split_extension(cleaned)
    if allowed and extension.lower() not in allowed:
        stem, extension = (stem + extension).rstrip(". "), allowed[0]
    stem = stem.rstrip(". ")
    if not stem:
        stem = f"document-{index}"
    elif stem.split(".")[0].rstrip(" ").upper() in _WINDOWS_RESERVED:
        stem = "_" + stem
    stem = stem[: _MAX_FILENAME - len(extension)].rstrip(". ")
    return stem + extension


@dataclass(frozen=True, slots=True)
class DocumentPolicy:
    """Which documents a submission may carry."""

    allowed_types: frozenset[str]
    max_document_bytes: int
    max_documents: int
    max_pdf_objects: int = DEFAULT_MAX_OBJECTS
    """A PDF with more objects than this is refused rather than walked."""

    def __post_init__(self) -> None:
        if self.max_document_bytes < 1 or self.max_documents < 1 or self.max_pdf_objects < 1:
            raise ValueError("document limits must be positive")


@dataclass(frozen=True, slots=True)
class CheckedDocument:
    """One accepted document, as it goes into the manifest and the receipt."""

    index: int
    original_filename: str | None
    filename: str
    declared_type: str | None
    detected_type: str
    size: int
    sha256: str
    warnings: tuple[str, ...] = ()
    """Active content found in it (``pdfcheck.WARNINGS``): accepted, but shown to the greffe."""


_MAX_QUOTED_NAME = 60


def _quoted(name: str) -> str:
    """A filename fit for a one-line ASCII SMTP reply: accents dropped, the rest '?'."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    safe = "".join(char if " " <= char <= "~" and char not in '"\\' else "?" for char in plain)
    if len(safe) > _MAX_QUOTED_NAME:
        safe = safe[: _MAX_QUOTED_NAME - 3] + "..."
    return f'"{safe}"'


def _declared(media_type: str | None) -> str | None:
    if media_type is None:
        return None
    return media_type.split(";", 1)[0].strip().lower() or None


def check_documents(
    policy: DocumentPolicy, docs: Sequence[tuple[str | None, str | None, bytes]]
) -> list[CheckedDocument]:
    """Check (filename, declared type, content) triples in order.

    A PDF is also parsed (`check_pdf_tail`, `pdfcheck.inspect_pdf`): the
    active content found is in the document's ``warnings``. Raises
    DocumentRefused, naming the first bad document, in one ASCII line fit
    for an SMTP reply.
    """
    if len(docs) > policy.max_documents:
        raise DocumentRefused(f"too many documents: {len(docs)} > {policy.max_documents}")
    checked = []
    for index, (original, declared, content) in enumerate(docs, start=1):
        label = f"document {index} {_quoted(original) if original else '(unnamed)'}"
        if len(content) > policy.max_document_bytes:
            raise DocumentRefused(f"{label} is larger than {policy.max_document_bytes} bytes")
        detected = sniff_media_type(content)
        if detected not in policy.allowed_types:
            raise DocumentRefused(f"{label}: type {detected} is not allowed")
        warnings = _checked_pdf(content, label, policy) if detected == PDF else ()
        checked.append(
            CheckedDocument(
                index=index,
                original_filename=original,
                filename=sanitise_filename(original, index, detected),
                declared_type=_declared(declared),
                detected_type=detected,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                warnings=warnings,
            )
        )
    return checked


def _checked_pdf(content: bytes, label: str, policy: DocumentPolicy) -> tuple[str, ...]:
    """Refuse a PDF that hides another file or that qpdf cannot read; return its warnings."""
    try:
        check_pdf_tail(content)
        return inspect_pdf(content, max_objects=policy.max_pdf_objects)
    except DocumentRefused as exc:
        raise DocumentRefused(f"{label}: {exc.message}") from None
