"""MIME parsing within limits: message metadata, a plain-text body and the attachments' bytes.

Design (measured, see tests/unit/test_mime_*.py):

* The structure is walked here, on the raw bytes, not by ``email.parser``:
  the stdlib feed parser checks every body line against every enclosing
  boundary (cost = lines x depth) and recurses without bound before we could
  count anything.  Walking ourselves lets us refuse on depth, part count and
  header size *before* descending, find delimiters with one regex scan and
  decode each payload exactly once, straight from the original buffer.
* Header *values* are decoded with our own small decoder rather than
  ``email.policy.default``, which turns unknown charsets and raw Latin-1 into
  U+FFFD and can raise on odd input: 8-bit bytes are UTF-8 if they decode as
  such, else Latin-1; encoded words in any charset (unknown -> UTF-8/Latin-1).
  Parameters (RFC 2231 continuations and charsets) are split by compat32's
  lenient ``Message.get_param``, whose raw result we decode the same way.
* ``max_line_bytes`` bounds header lines only: base64 without line breaks is
  common in real mail and the body size is already bounded by the SMTP limit.
* An attached message/rfc822 (or message/global) is walked recursively: its
  documents join the message's, its text follows the body under a separator
  line.  The attached message is one level deeper than its message/rfc822
  part, as a multipart's children are one level deeper than the multipart.
* base64 is refused, not guessed, when it holds characters outside the
  alphabet or data after padding: a court document must not arrive truncated.
"""

from __future__ import annotations

import binascii
import itertools
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from gateway.errors import MalformedMessage
from gateway.ingest.mimetext import (
    decode_8bit,
    decode_text,
    decode_words,
    html_to_text,
    param_text,
)

_Fields = list[tuple[str, str]]  # (lower-case name, unfolded value decoded to text)


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """Structural limits; exceeding one refuses the message (554 5.6.0)."""

    max_depth: int = 10  # multipart / message/rfc822 nesting
    max_parts: int = 200  # every MIME entity, containers and the top level included
    max_headers: int = 500  # header fields per header block
    max_header_bytes: int = 65536  # size of any header block, the top-level one included
    max_line_bytes: int = 998 * 8  # header lines only (see module docstring)


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None  # decoded original filename, None if absent
    declared_type: str  # Content-Type main/sub, lower-case, as declared
    content: bytes  # payload with the transfer encoding undone


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    message_id: str  # without angle brackets; generated when missing
    message_id_generated: bool
    from_header: str  # decoded From: value(s), joined with ", " when repeated
    to: list[str]  # addr-specs of every To: field
    cc: list[str]  # addr-specs of every Cc: field
    subject: str  # decoded, whitespace folded, "" if absent
    date: datetime | None  # UTC-aware, None if absent or unparsable
    text_body: str  # plain text only; HTML is rendered to text, never kept
    attachments: list[Attachment]
    size: int  # len(raw)


_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")
_MBOX_FROM_RE = re.compile(rb"From (?![ \t]*:)")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_SEPARATOR = "---------- Attached message ----------"


# Signature parts of multipart/signed mail (PGP/MIME, S/MIME) are not filings: they stay
# in the stored raw message but are neither documents nor refused as unknown types.
SIGNATURE_TYPES = frozenset(
    {"application/pgp-signature", "application/pkcs7-signature", "application/x-pkcs7-signature"}
)


def filing_attachments(parsed: ParsedMessage) -> list[Attachment]:
    """The attachments that are documents of the filing (signature parts are not)."""
    return [a for a in parsed.attachments if a.declared_type not in SIGNATURE_TYPES]


def parse_message(
    raw: bytes,
    limits: MimeLimits,
    *,
    id_domain: str,
    new_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
) -> ParsedMessage:
    """Parse raw message bytes, or raise MalformedMessage with a one-line ASCII reason."""
    walker = _Walker(limits)
    walker.count_entity(0)
    # An mbox "From " line may precede the header (files, some IMAP exports).
    start = raw.find(b"\n") + 1 if _MBOX_FROM_RE.match(raw) else 0
    fields, body_start = walker.head(raw, start, len(raw))
    froms = [decode_words(v, phrase=True) for v in _values(fields, "from") if v.strip()]
    if not froms:
        raise MalformedMessage("no From: header")
    body = _Body()
    walker.content(raw, fields, body_start, len(raw), 0, body)
    message_id = _message_id(_first(fields, "message-id"))
    return ParsedMessage(
        message_id=message_id or f"{new_uuid()}@{id_domain}",
        message_id_generated=not message_id,
        from_header=", ".join(froms),
        to=_addresses(fields, "to"),
        cc=_addresses(fields, "cc"),
        subject=_fold(decode_words(_first(fields, "subject") or "")),
        date=_parse_date(_first(fields, "date")),
        text_body=body.render(),
        attachments=walker.attachments,
        size=len(raw),
    )


@dataclass(slots=True)
class _Body:
    """The text gathered at one message level, and that of its attached messages."""

    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)

    def render(self) -> str:
        own = "\n".join(self.plain) if self.plain else "\n\n".join(map(html_to_text, self.html))
        return "\n\n".join(x for x in [own.strip("\n"), *self.attached] if x)


@dataclass(frozen=True, slots=True)
class _Content:
    """What an entity's Content-* fields say about it."""

    ctype: str
    cte: str
    boundary: str | None
    charset: str | None
    filename: str | None
    is_attachment: bool

    @classmethod
    def of(cls, fields: _Fields, default_type: str) -> _Content:
        params = Message()  # compat32: lenient parameter parsing, RFC 2231 continuations
        params.set_default_type(default_type)
        for name in ("content-type", "content-disposition"):
            value = _first(fields, name)
            if value is not None:
                params[name] = value
        ctype = params.get_content_type()
        filename = _filename(params)
        return cls(
            ctype=ctype,
            cte=(_first(fields, "content-transfer-encoding") or "7bit").strip().lower(),
            boundary=params.get_boundary(),
            charset=params.get_content_charset(),
            filename=filename,
            is_attachment=params.get_content_disposition() == "attachment"
            or filename is not None
            or ctype not in ("text/plain", "text/html"),
        )


def _filename(params: Message) -> str | None:
    for name, header in (("filename", "content-disposition"), ("name", "content-type")):
        value = params.get_param(name, header=header)
        if value is not None:
            return param_text(value).strip() or None
    return None


class _Walker:
    """Walks one message's entities, counting parts and depth, collecting attachments."""

    def __init__(self, limits: MimeLimits) -> None:
        self.limits = limits
        self.parts = 0
        self.attachments: list[Attachment] = []

    def count_entity(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise MalformedMessage(f"nesting deeper than {self.limits.max_depth}")
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise MalformedMessage(f"more than {self.limits.max_parts} MIME parts")

    def head(self, buf: bytes, start: int, end: int) -> tuple[_Fields, int]:
        """Return the header fields of the entity buf[start:end] and where its body starts."""
        max_bytes = self.limits.max_header_bytes
        head_end, body_start = _split_head(buf, start, end, max_bytes)
        if head_end - start > max_bytes:
            raise MalformedMessage(f"header block larger than {max_bytes} bytes")
        lines = buf[start:head_end].split(b"\n")
        if any(len(line) > self.limits.max_line_bytes for line in lines):
            raise MalformedMessage(f"header line longer than {self.limits.max_line_bytes} bytes")
        fields = _parse_fields(lines)
        if len(fields) > self.limits.max_headers:
            raise MalformedMessage(f"too many header fields (more than {self.limits.max_headers})")
        return fields, body_start

    def entity(
        self, buf: bytes, start: int, end: int, depth: int, default_type: str, body: _Body
    ) -> None:
        self.count_entity(depth)
        fields, body_start = self.head(buf, start, end)
        self.content(buf, fields, body_start, end, depth, body, default_type)

    def content(
        self,
        buf: bytes,
        fields: _Fields,
        start: int,
        end: int,
        depth: int,
        body: _Body,
        default_type: str = "text/plain",
    ) -> None:
        """Handle the body buf[start:end] of the entity (number self.parts) with these fields."""
        number = self.parts
        try:
            info = _Content.of(fields, default_type)
        except Exception:  # the stdlib parameter parser must not turn bad input into a 4xx
            raise MalformedMessage(f"unparsable Content-Type in part {number}") from None
        if info.ctype.startswith("multipart/"):
            self.multipart(buf, info, start, end, depth, body)
        elif info.ctype in _MESSAGE_TYPES and info.cte in ("base64", "quoted-printable"):
            inner = _decode_payload(buf, start, end, info.cte, number)  # not allowed, but seen
            self.attached_message(inner, 0, len(inner), depth + 1, body)
        elif info.ctype in _MESSAGE_TYPES:
            self.attached_message(buf, start, end, depth + 1, body)
        else:
            self.leaf(_decode_payload(buf, start, end, info.cte, number), info, body)

    def multipart(
        self, buf: bytes, info: _Content, start: int, end: int, depth: int, body: _Body
    ) -> None:
        number = self.parts
        boundary = info.boundary
        if not boundary:
            raise MalformedMessage(f"multipart without boundary in part {number}")
        try:
            delimiter = b"--" + boundary.encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            raise MalformedMessage(f"non-ASCII boundary in part {number}") from None
        child_type = "message/rfc822" if info.ctype == "multipart/digest" else "text/plain"
        found = False
        for part_start, part_end in _split_multipart(buf, start, end, delimiter):
            found = True
            self.entity(buf, part_start, part_end, depth + 1, child_type, body)
        # Refuse rather than lose content when no delimiter delimits it at all;
        # an empty container (blank, or a lone close delimiter) is harmless.
        if not found and buf[start:end].strip() and buf.find(delimiter, start, end) < 0:
            raise MalformedMessage(f"no body part found for the boundary of part {number}")

    def attached_message(self, buf: bytes, start: int, end: int, depth: int, body: _Body) -> None:
        self.count_entity(depth)
        fields, body_start = self.head(buf, start, end)
        inner = _Body()
        self.content(buf, fields, body_start, end, depth, inner)
        summary = [
            f"{label}: {_fold(decode_words(value))}"
            for label in ("From", "Date", "Subject")
            if (value := _first(fields, label.lower())) is not None
        ]
        body.attached.append("\n".join([_SEPARATOR, *summary, "", inner.render()]))

    def leaf(self, payload: bytes, info: _Content, body: _Body) -> None:
        if info.is_attachment:
            self.attachments.append(Attachment(info.filename, info.ctype, payload))
            return
        text = decode_text(payload, info.charset)
        (body.plain if info.ctype == "text/plain" else body.html).append(text)


def _split_head(buf: bytes, start: int, end: int, max_bytes: int) -> tuple[int, int]:
    """Return (end of header block, start of body) for the entity buf[start:end]."""
    if buf.startswith(b"\n", start, end):
        return start, start + 1
    if buf.startswith(b"\r\n", start, end):
        return start, start + 2
    if not _FIELD_START.match(buf, start, min(end, start + 1000)):
        return start, start  # first line is not a field: a part without headers
    bound = min(end, start + max_bytes + 3)  # past it, the caller refuses the size anyway
    hits = [
        (at + 1, at + len(blank))
        for blank in (b"\n\r\n", b"\n\n")
        if (at := buf.find(blank, start, bound)) >= 0
    ]
    return min(hits) if hits else (end, end)  # no blank line: all header, no body


def _parse_fields(lines: list[bytes]) -> _Fields:
    raw_fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        line = line.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if raw_fields:  # folded continuation: unfold (RFC 5322 2.2.3)
                name, value = raw_fields[-1]
                raw_fields[-1] = (name, value + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if sep:  # anything else (an mbox "From " line, garbage) is not a field
            raw_fields.append((name.strip().lower(), value.strip()))
    return [(n.decode("ascii", "replace"), decode_8bit(v)) for n, v in raw_fields]


def _split_multipart(
    buf: bytes, start: int, end: int, delimiter: bytes
) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each body part between delimiter lines (RFC 2046 5.1.1).

    A delimiter line is the delimiter, `--` if it closes, blanks, then a line
    break (or the end).  Found with `bytes.find`: every message has a boundary
    of its own, and compiling a pattern for it cost more than the search.
    """
    part_start = -1
    first = _delimiter_line(buf, start, end, delimiter)
    later = _later_delimiters(buf, start, end, delimiter)
    matches = itertools.chain([(start, *first)] if first else [], later)
    for line_start, line_end, closing in matches:
        if part_start >= 0:  # the line break before a delimiter belongs to it
            part_end = line_start
            part_end -= part_end > part_start and buf[part_end - 1] == 0x0D
            yield part_start, max(part_start, part_end)
        if closing:
            return
        part_start = line_end
    if part_start >= 0:
        yield part_start, end  # no closing delimiter: the last part runs to the end


def _later_delimiters(
    buf: bytes, start: int, end: int, delimiter: bytes
) -> Iterator[tuple[int, int, bool]]:
    """(start of its line break, end of line, closing) of each delimiter line after a line break."""
    needle = b"\n" + delimiter
    at = buf.find(needle, start, end)
    while at >= 0:
        found = _delimiter_line(buf, at + 1, end, delimiter)
        if found is None:
            at = buf.find(needle, at + 1, end)
            continue
        yield at, *found
        at = buf.find(needle, found[0], end)


def _delimiter_line(buf: bytes, at: int, end: int, delimiter: bytes) -> tuple[int, bool] | None:
    """(end of the line, closing) if a delimiter line starts at `at`, else None."""
    if not buf.startswith(delimiter, at, end):
        return None
    pos = at + len(delimiter)
    closing = buf.startswith(b"--", pos, end)
    pos += 2 * closing
    while pos < end and buf[pos] in _LINE_BLANKS:
        pos += 1
    if pos >= end:
        return end, closing
    if buf[pos] == 0x0A:
        return pos + 1, closing
    return None


_LINE_BLANKS = b" \t\r"


def _decode_payload(buf: bytes, start: int, end: int, cte: str, number: int) -> bytes:
    if cte == "base64":
        return _decode_base64(buf[start:end], number)
    if cte == "quoted-printable":
        return binascii.a2b_qp(memoryview(buf)[start:end])
    return buf[start:end]  # 7bit, 8bit, binary and unknown encodings are kept as they are


def _decode_base64(chunk: bytes, number: int) -> bytes:
    compact = chunk.translate(None, b" \t\r\n")
    del chunk
    bad = f"undecodable base64 in part {number}"
    if compact.translate(None, _B64_ALPHABET):
        raise MalformedMessage(bad)
    padding = compact.find(b"=")
    if padding >= 0 and compact.count(b"=", padding) != len(compact) - padding:
        raise MalformedMessage(bad)  # data after padding: joined chunks would be truncated
    data_len = len(compact) if padding < 0 else padding
    if data_len % 4 == 1:
        raise MalformedMessage(bad)
    if data_len % 4 and len(compact) % 4:  # missing padding, common in the wild
        compact = compact[:data_len] + b"=" * (-data_len % 4)
    try:
        return binascii.a2b_base64(compact)
    except binascii.Error:
        raise MalformedMessage(bad) from None


def _values(fields: _Fields, name: str) -> list[str]:
    return [value for key, value in fields if key == name]


def _first(fields: _Fields, name: str) -> str | None:
    return next((value for key, value in fields if key == name), None)


def _fold(text: str) -> str:
    return " ".join(text.split())


def _addresses(fields: _Fields, name: str) -> list[str]:
    return [addr for _name, addr in getaddresses(_values(fields, name)) if addr]


def _message_id(value: str | None) -> str:
    if value is None:
        return ""
    bracketed = re.search(r"<([^<>\s]+)>", value)
    if bracketed:
        return bracketed.group(1)
    token = value.strip()
    return "" if not token or any(c.isspace() or c in "<>" for c in token) else token


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    if parsed.tzinfo is None:  # "-0000": zone unknown, read as UTC (RFC 5322 3.3)
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
