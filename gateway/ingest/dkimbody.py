"""DKIM body hashes computed piece by piece, byte-for-byte as dkimpy computes them.

Why: dkimpy canonicalises the body in one go (``rfc822_parse`` splits the whole
message into lines and joins them again, then each canonicalisation step is a
regex over the whole body), which costs several copies of a 25 MB message.
Here the body is read in pieces that end on a line break, each piece is
canonicalised with dkimpy's own regex helpers (they never look across a line
break, so per piece equals whole body), and only the rule about trailing empty
lines needs state between pieces.

What "dkimpy's canonical body" means, precisely (dkimpy 1.1):

* the body starts after the first empty line, lines being split on ``\\r?\\n``,
  and every ``\\r?\\n`` becomes CRLF (a bare CR stays as it is);
* simple: trailing empty lines are dropped, and a body that does not end with
  CRLF gets one (so an empty body is one CRLF);
* relaxed: spaces and tabs before a CRLF are dropped, other runs of them become
  one space (the text after the last line break keeps its trailing space), then
  as simple, except that a body which ends up as a lone CRLF is empty;
* ``l=`` keeps only the first ``l`` bytes of the canonical body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Protocol

from gateway.adapters.dkimpy import compress_whitespace, strip_trailing_whitespace

CRLF = b"\r\n"
SIMPLE = b"simple"
RELAXED = b"relaxed"

# Pieces stay small so the transient copies (slice, line-ending fix, two regex
# passes) cost a few MB whatever the message size.
PIECE_BYTES = 256 * 1024
# Held-back empty lines are written in blocks of this many, never all at once.
_EMPTY_LINES_BLOCK = 32 * 1024

# How much of a piece's end is copied to find its trailing line breaks.
_TAIL_BYTES = 4096

# dkimpy's header block ends at the first empty line, lines split on \r?\n.
_END_OF_HEADERS = re.compile(rb"(?:\A|\n)\r?\n")


class Hasher(Protocol):
    """What is needed of a hashlib object."""

    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


def body_start(raw: bytes) -> int:
    """Offset of the body as dkimpy sees it; ``len(raw)`` when there is no empty line."""
    match = _END_OF_HEADERS.search(raw)
    return match.end() if match else len(raw)


def body_hash(
    raw: bytes,
    start: int,
    canonicalization: bytes,
    new_hasher: Callable[[], Hasher],
    length: int | None = None,
) -> bytes:
    """Digest of the canonical form of ``raw[start:]``, cut to ``length`` bytes if given.

    ``canonicalization`` is the body half of c= (``simple`` or ``relaxed``);
    ``new_hasher`` is the hashlib constructor a= names. Raises ValueError for
    an unknown canonicalisation or a negative length.
    """
    if canonicalization not in (SIMPLE, RELAXED):
        raise ValueError(f"unknown body canonicalization {canonicalization!r}")
    if length is not None and length < 0:
        raise ValueError("negative body length")
    sink = _Sink(new_hasher(), length)
    body = _CanonicalBody(relaxed=canonicalization == RELAXED, sink=sink)
    for piece in _pieces(raw, start, PIECE_BYTES):
        body.feed(piece)
        if sink.full:
            break  # l= reached: nothing further can change the bytes already hashed
    else:
        body.finish()
    return sink.hasher.digest()


def _pieces(raw: bytes, start: int, size: int) -> Iterator[bytes]:
    """Slices of ``raw[start:]`` of about ``size`` bytes, each ending on LF but the last.

    A line longer than ``size`` makes a longer piece: SMTP bounds lines at 1000
    bytes, and other channels' long lines cost no more than the line itself.
    """
    end = len(raw)
    pos = start
    while pos < end:
        stop = pos + size
        if stop >= end:
            cut = end
        else:
            newline = raw.rfind(b"\n", pos, stop)
            if newline < 0:
                newline = raw.find(b"\n", stop)
            cut = end if newline < 0 else newline + 1
        yield raw[pos:cut]
        pos = cut


class _Sink:
    """Feeds the hasher, stopping after ``limit`` bytes (the l= tag) when there is one."""

    def __init__(self, hasher: Hasher, limit: int | None) -> None:
        self.hasher = hasher
        self._remaining = limit

    @property
    def full(self) -> bool:
        return self._remaining is not None and self._remaining <= 0

    def write(self, data: bytes | memoryview) -> None:
        if self._remaining is not None:
            if self._remaining <= 0:
                return
            data = memoryview(data)[: self._remaining]
            self._remaining -= len(data)
        self.hasher.update(data)


class _CanonicalBody:
    """Canonicalises pieces in order; empty lines are held back until a line follows them."""

    def __init__(self, *, relaxed: bool, sink: _Sink) -> None:
        self._relaxed = relaxed
        self._sink = sink
        self._held_empty_lines = 0
        self._wrote_line = False  # a non-empty line (or the final partial line) was written
        self._partial = b""  # text after the last line break; only the last piece has one

    def feed(self, piece: bytes) -> None:
        last_newline = piece.rfind(b"\n")
        if last_newline + 1 < len(piece):
            self._partial = piece[last_newline + 1 :]
            piece = piece[: last_newline + 1]
        if piece:
            self._lines(self._canonical_lines(piece))

    def finish(self) -> None:
        if self._partial:
            # dkimpy leaves the unterminated last line's trailing space alone (its
            # "strip before CRLF" sees no CRLF there) and then appends a CRLF.
            partial = compress_whitespace(self._partial) if self._relaxed else self._partial
            self._write_held_empty_lines()
            self._sink.write(partial + CRLF)
            self._wrote_line = True
        elif not self._wrote_line and not self._relaxed:
            self._sink.write(CRLF)  # simple: an empty body is one CRLF; relaxed: nothing

    def _canonical_lines(self, piece: bytes) -> bytes:
        """Whole lines, CRLF-terminated, canonicalised as dkimpy does the whole body."""
        if piece.count(b"\n") != piece.count(CRLF):
            piece = piece.replace(CRLF, b"\n").replace(b"\n", CRLF)
        if self._relaxed:
            piece = compress_whitespace(strip_trailing_whitespace(piece))
        return bytes(piece)

    def _lines(self, text: bytes) -> None:
        """Write ``text`` (whole lines) except its trailing empty lines, which are held."""
        kept_end, trailing_empty = _split_trailing_empty_lines(text)
        if kept_end == 0:
            self._held_empty_lines += trailing_empty
            return
        self._write_held_empty_lines()
        self._sink.write(memoryview(text)[:kept_end])
        self._wrote_line = True
        self._held_empty_lines = trailing_empty

    def _write_held_empty_lines(self) -> None:
        while self._held_empty_lines and not self._sink.full:
            count = min(self._held_empty_lines, _EMPTY_LINES_BLOCK)
            self._sink.write(CRLF * count)
            self._held_empty_lines -= count
        self._held_empty_lines = 0


def _split_trailing_empty_lines(text: bytes) -> tuple[int, int]:
    """(end of the last non-empty line with its CRLF, number of empty lines after it).

    ``text`` is whole lines with CRLF line ends, so every LF in it ends a line
    and is preceded by CR; a CR followed by CR is line content. The trailing
    empty lines are therefore the trailing run of CRLF pairs after the last
    non-CR/LF byte, less the pair ending the line that byte belongs to, and
    that run starts after the last CR CR in it, if any. ``(0, n)``: all n lines
    are empty.
    """
    run_start = _line_break_run_start(text)
    double_cr = text.rfind(b"\r\r", run_start)
    pairs_start = run_start if double_cr < 0 else double_cr + 1
    pairs = (len(text) - pairs_start) // 2
    if pairs_start == 0:
        return 0, pairs
    return pairs_start + 2, pairs - 1


def _line_break_run_start(text: bytes) -> int:
    """Where the run of CR and LF ending ``text`` starts, copying only its tail.

    A piece longer than PIECE_BYTES is one long line and its line break, so
    the whole piece is copied only when it is all empty lines (PIECE_BYTES).
    """
    tail = text[-_TAIL_BYTES:]
    kept = len(tail.rstrip(b"\r\n"))
    if kept:
        return len(text) - len(tail) + kept
    return len(text.rstrip(b"\r\n"))
