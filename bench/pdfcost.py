"""`python -m bench.pdfcost`: what the PDF check costs per document, in milliseconds.

The check is `documents.check_documents` on one PDF: the bytes after %%EOF,
then qpdf (pikepdf) opening it from memory and walking every object. Two
families of documents: scans (one page, one incompressible image: size grows,
objects do not) and text (pages with their own font and content stream, in
compressed object streams: objects grow with pages). Each figure is the
median CPU time (this process's, so other load on the machine does not
count) of several runs, after one warm-up run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import pikepdf
from pikepdf import Dictionary, Name

from bench.messages import pdf_like
from gateway.ingest.documents import (
    DEFAULT_ALLOWED_TYPES,
    DocumentPolicy,
    check_documents,
    check_pdf_tail,
)
from gateway.ingest.pdfcheck import inspect_pdf

POLICY = DocumentPolicy(DEFAULT_ALLOWED_TYPES, max_document_bytes=30_000_000, max_documents=1)
SCANS = (("scan 100 KB", 100_000), ("scan 1 MB", 1_000_000), ("scan 25 MB", 25_000_000))
TEXTS = (("text 10 pages", 10), ("text 100 pages", 100), ("text 1000 pages", 1000))


def text_pdf(pages: int) -> bytes:
    """Pages of text, each with its own font dictionary, saved with object streams."""
    pdf = pikepdf.new()
    for number in range(pages):
        page = pdf.add_blank_page(page_size=(595, 842))
        font = pdf.make_indirect(
            Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica)
        )
        page.Resources = Dictionary(Font=Dictionary(F1=font))
        lines = b"".join(
            b"BT /F1 10 Tf 50 %d Td (Compte de gestion, page %d, ligne %d) Tj ET\n"
            % (800 - 14 * line, number + 1, line)
            for line in range(50)
        )
        page.Contents = pdf.make_stream(lines)
    buffer = io.BytesIO()
    pdf.save(buffer, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    return buffer.getvalue()


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: the first open also sets qpdf's limits
    times = []
    for _ in range(repeats):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return 1000 * statistics.median(times)


def row(label: str, data: bytes, repeats: int) -> str:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        objects = len(pdf.objects)
    whole = median_ms(lambda: check_documents(POLICY, [("piece.pdf", None, data)]), repeats)
    tail = median_ms(lambda: check_pdf_tail(data), repeats)
    qpdf = median_ms(lambda: inspect_pdf(data), repeats)
    return f"| {label} | {len(data):,} | {objects:,} | {whole:.2f} | {tail:.2f} | {qpdf:.2f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pdfcost", description=__doc__)
    parser.add_argument("--repeats", type=int, default=15, help="runs per document (median)")
    args = parser.parse_args(argv)
    print(f"pikepdf {pikepdf.__version__}, qpdf {pikepdf.__libqpdf_version__}")
    print("| document | bytes | objects | check (CPU ms) | after %%EOF | qpdf open + walk |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, size in SCANS:
        print(row(label, pdf_like(size), args.repeats), flush=True)
    for label, pages in TEXTS:
        print(row(label, text_pdf(pages), args.repeats), flush=True)
    print("check = the whole documents check (SHA-256 included); the two parts are timed alone.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
