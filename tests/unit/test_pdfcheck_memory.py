"""qpdf parses a document from a sealed memory file, with the same verdicts as from a stream."""

from __future__ import annotations

import io
import os

import pikepdf
import pytest

from gateway.errors import DocumentRefused
from gateway.ingest import pdfcheck
from gateway.ingest.pdfcheck import inspect_pdf
from tests.fixtures import pdfs

CORPUS = {
    "plain": pdfs.plain_pdf(pages=3),
    "javascript": pdfs.javascript_pdf(),
    "js-in-object-stream": pdfs.compressed_javascript_pdf(),
    "launch": pdfs.launch_pdf(),
    "attachment": pdfs.embedded_file_pdf(),
    "xfa": pdfs.xfa_pdf(),
    "owner-password": pdfs.owner_password_pdf(),
    "password": pdfs.password_pdf(),
    "garbage": pdfs.garbage_pdf(),
    "truncated": pdfs.truncated_pdf(),
    "object-stream-bomb": pdfs.object_stream_bomb(),
    "empty": b"",
}


def verdict(data: bytes) -> tuple[str, ...] | str:
    try:
        return inspect_pdf(data)
    except DocumentRefused as refused:
        return f"refused: {refused.message}"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_memory_file_stream_and_no_memory_files_give_the_same_verdict(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = CORPUS[name]
    mapped = verdict(data)
    with monkeypatch.context() as patch:
        patch.setattr(pdfcheck, "MAPPED_MAX_BYTES", -1)  # every document through a BytesIO
        assert verdict(data) == mapped
    with monkeypatch.context() as patch:

        def refused(*args: object) -> int:
            raise OSError("memfd_create refused")

        patch.setattr(os, "memfd_create", refused)
        assert verdict(data) == mapped


def test_qpdf_reads_a_memory_file_without_calling_back_into_python() -> None:
    calls: list[str] = []

    class Counting(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            calls.append("read")
            return super().read(size)

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            calls.append("readinto")
            return super().readinto(buffer)

        def seek(self, offset: int, whence: int = 0) -> int:
            calls.append("seek")
            return super().seek(offset, whence)

    def parse(mode: pikepdf.AccessMode) -> None:
        memory = pdfcheck._memory_file(pdfs.javascript_pdf())
        assert memory is not None
        with (
            memory,
            Counting(memory.fileno(), closefd=False) as counting,
            pikepdf.open(counting, conversion_mode="explicit", access_mode=mode) as pdf,
        ):
            assert "javascript" in pdfcheck._warnings(pdf, 1000)

    parse(pikepdf.AccessMode.mmap_only)
    assert calls == []
    # Read as a stream, the same document takes dozens of calls, each of which takes the
    # interpreter lock back from whichever thread holds it.
    parse(pikepdf.AccessMode.stream)
    assert len(calls) > 20


def test_the_memory_file_is_sealed_and_reads_from_its_start() -> None:
    data = pdfs.plain_pdf()
    memory = pdfcheck._memory_file(data)
    assert memory is not None
    with memory:
        with pytest.raises(PermissionError):
            os.write(memory.fileno(), b"x")
        with pytest.raises(PermissionError):
            os.ftruncate(memory.fileno(), 1)
        assert memory.read() == data


def test_a_large_document_is_read_as_a_stream_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    data = pdfs.plain_pdf()
    monkeypatch.setattr(pdfcheck, "MAPPED_MAX_BYTES", len(data) - 1)
    copied: list[bytes] = []
    monkeypatch.setattr(pdfcheck, "_memory_file", copied.append)
    assert inspect_pdf(data) == ()
    assert copied == []


def test_no_file_descriptor_is_left_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        verdict(pdfs.plain_pdf())
        verdict(pdfs.garbage_pdf())
        verdict(pdfs.password_pdf())
    assert len(os.listdir("/proc/self/fd")) == before
