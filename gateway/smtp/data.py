"""The bytes after DATA turned into the message, in large pieces rather than line by line.

aiosmtpd reads DATA one line at a time through a StreamReader whose limit is
the line length (1001 bytes): a 100 KB message is some 1,300 awaits, and the
reader pauses the socket every 2 KB.  That loop alone cost more CPU per
message than the rest of the protocol.  Here the adapter reads up to each
`.<CRLF>` (large pieces, the reader's limit raised for the DATA phase) and
this scanner does aiosmtpd's per-line work on whole pieces with bytes
methods: the size limit, the line-length limit, dot-unstuffing.

What it decides is aiosmtpd 1.4's decision: a line (bytes up to and including
CRLF) longer than `line_limit` is refused (500) after the final dot, more
than `size_limit` bytes (counted before unstuffing) too (552), whichever a
line met first; a line so long that aiosmtpd's reader would have overrun
(more than line_limit + 2 bytes before its CRLF) counts as too long before
its bytes are counted.  The end is a `.` alone on a line: CRLF `.` CRLF in
the stream, the DATA command's own CRLF counting as the first.

While it splits the pieces into lines it also notes a bare CR or LF (one
not part of a CRLF), so the pipeline need not count the whole message
again for its SMTP smuggling check (`Inbound.bare_line_ending`).
"""

from __future__ import annotations

import enum
import io

END = b".\r\n"
CRLF = b"\r\n"


class DataState(enum.Enum):
    NOMINAL = enum.auto()
    TOO_LONG = enum.auto()
    """A line longer than the line limit: refused once DATA ends."""
    TOO_MUCH = enum.auto()
    """More than the size limit: refused once DATA ends."""


class DataScanner:
    """Feed it what the reader returns up to each `.<CRLF>`; it says when DATA ended.

    A piece must not end between the CR and the LF of a line end (the adapter
    reads one byte more when a piece ends with CR), so every CRLF is whole
    within one piece.
    """

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit or None
        self.line_limit = line_limit
        self.state = DataState.NOMINAL
        self.received = 0
        self._buffer = io.BytesIO()
        self._line = 0
        """Bytes of the current line seen so far (0: at the start of a line)."""
        self._tail = CRLF
        """The last two bytes of the stream so far (DATA's own CRLF at first)."""
        self.bare_line_ending = False
        """A CR not followed by LF, or an LF not preceded by CR, in what was kept."""

    def feed(self, piece: bytes) -> bool:
        """Take the next piece of the stream; True when it ended with the final dot."""
        if piece.endswith(END):
            before = piece[-5:-3] if len(piece) >= 5 else (self._tail + piece[:-3])[-2:]
            if before == CRLF:
                self._take(piece[:-3])
                return True
        self._take(piece)
        return False

    def result(self) -> tuple[bytes, DataState]:
        """The message (unstuffed) and NOMINAL, or nothing and the limit that was met."""
        if self.state is not DataState.NOMINAL:
            return b"", self.state
        return self._buffer.getvalue(), DataState.NOMINAL

    # -- internals ----------------------------------------------------------
    def _take(self, segment: bytes) -> None:
        if not segment:
            return
        if self.state is DataState.NOMINAL:
            parts = segment.split(CRLF)
            if not self._fits(segment, parts):
                self._slow(segment)
            if self.state is DataState.NOMINAL:
                if not self.bare_line_ending:
                    # Each CRLF holds one CR and one LF (a piece never ends between
                    # them): any other CR or LF is bare.
                    crlfs = len(parts) - 1
                    self.bare_line_ending = (
                        segment.count(b"\r") != crlfs or segment.count(b"\n") != crlfs
                    )
                self._keep(segment)
        self._advance(segment)

    def _fits(self, segment: bytes, parts: list[bytes]) -> bool:
        """Neither limit is met anywhere in `segment`, split at CRLF into `parts` (in C)."""
        if self.size_limit and self.received + len(segment) > self.size_limit:
            return False
        if len(parts) == 1:
            return self._line + len(segment) <= self.line_limit
        first = self._line + len(parts[0]) + 2
        middle = max(map(len, parts[1:-1]), default=0) + 2
        return max(first, middle) <= self.line_limit and len(parts[-1]) <= self.line_limit

    def _slow(self, segment: bytes) -> None:
        """Line by line, exactly as aiosmtpd decides which limit was met first."""
        received, line, start = self.received, self._line, 0
        overrun = self.line_limit + 2
        while self.state is DataState.NOMINAL:
            end = segment.find(CRLF, start)
            if end < 0:  # a line still open at the end of the piece
                if line + len(segment) - start > overrun:
                    self.state = DataState.TOO_LONG
                return
            length = line + end + 2 - start
            received += end + 2 - start
            if length > overrun:
                self.state = DataState.TOO_LONG
            elif self.size_limit and received > self.size_limit:
                self.state = DataState.TOO_MUCH
            elif length > self.line_limit:
                self.state = DataState.TOO_LONG
            line, start = 0, end + 2
        # A limit was met: nothing more is kept.

    def _keep(self, segment: bytes) -> None:
        """Append with dot-unstuffing: a dot that starts a line is dropped."""
        if self._line == 0 and segment.startswith(b"."):
            segment = segment[1:]
        self._buffer.write(segment.replace(b"\r\n.", CRLF))

    def _advance(self, segment: bytes) -> None:
        self.received += len(segment)
        last = segment.rfind(CRLF)
        self._line = self._line + len(segment) if last < 0 else len(segment) - last - 2
        self._tail = (self._tail + segment[-2:])[-2:]
        if self.state is not DataState.NOMINAL:
            self._buffer = io.BytesIO()
