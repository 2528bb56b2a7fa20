"""The stub left on the mail server in place of a pulled message: headers, text, a note."""

from __future__ import annotations

import hashlib
import quopri
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.utils import getaddresses

from gateway.ingest.documents import sanitise_filename, sniff_media_type
from gateway.ingest.mime import ParsedMessage
from gateway.outbox.templates import DocumentLine, format_documents

STUB_HEADER = "X-Gateway-Stub"
"""Marks a stub: `sha256=<original raw SHA-256>; reference=<ref>`. Pullers skip stubs."""

# Dropped from the original: they describe the body we replace, or would be
# false about the stub (a DKIM signature cannot verify over a changed body).
_DROPPED = frozenset(
    {
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-id",
        "content-description",
        "content-length",
        "mime-version",
        "dkim-signature",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        STUB_HEADER.lower(),
    }
)
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_CRLF = b"\r\n"
_MAX_LINE = 998


@dataclass(frozen=True, slots=True)
class HeaderField:
    name: str  # lower-case
    raw: bytes  # the whole field as received, folded lines included, without the final CRLF


def split_header(raw: bytes) -> tuple[list[HeaderField], bytes]:
    """Return the top-level header fields (verbatim) and the body bytes."""
    match = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    fields: list[HeaderField] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            last = fields[-1]
            fields[-1] = HeaderField(last.name, last.raw + _CRLF + line)
            continue
        name = _FIELD_NAME.match(line)
        if name:  # anything else (an mbox "From " line, garbage) is not a field
            fields.append(HeaderField(name.group(1).decode("ascii").lower(), line))
    return fields, body


def field_value(field: HeaderField) -> str:
    """The field's value unfolded and decoded (RFC 2047), for addresses and markers."""
    value = field.raw.split(b":", 1)[1].decode("utf-8", "replace")
    value = " ".join(value.split())
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def recipient_addresses(raw: bytes) -> list[str]:
    """Addresses the message was delivered to, most specific first.

    Delivered-To and X-Original-To are written by the receiving server; To, Cc
    and Bcc (kept in a Sent folder) by the sender.
    """
    fields, _ = split_header(raw)
    found: list[str] = []
    for name in ("delivered-to", "x-original-to", "to", "cc", "bcc"):
        values = [field_value(f) for f in fields if f.name == name]
        found.extend(addr for _, addr in getaddresses(values) if addr and addr not in found)
    return found


def is_stub(raw: bytes) -> bool:
    """True for a stub this gateway wrote: the marker and a plain-text body only.

    A sender forging the marker on a message with attachments does not hide
    it: a real stub never has a multipart body.
    """
    fields, _ = split_header(raw)
    if not any(f.name == STUB_HEADER.lower() for f in fields):
        return False
    types = [field_value(f).lower() for f in fields if f.name == "content-type"]
    return all(t.startswith("text/plain") for t in types)


def stub_marker(raw_sha256: str) -> str:
    """What an IMAP `SEARCH HEADER X-Gateway-Stub` finds for this original."""
    return f"sha256={raw_sha256}"


def document_lines(parsed: ParsedMessage) -> list[DocumentLine]:
    """Each attachment as the receipt names it: sanitised name, size, SHA-256."""
    return [
        DocumentLine(
            name=sanitise_filename(a.filename, index, sniff_media_type(a.content)),
            size=len(a.content),
            sha256=hashlib.sha256(a.content).hexdigest(),
        )
        for index, a in enumerate(parsed.attachments, start=1)
    ]


def stub_note(references: Sequence[str], documents: Sequence[DocumentLine]) -> str:
    """The note put at the top of the stub's text."""
    refs = ", ".join(references) if references else "(aucune)"
    return "\n".join(
        [
            "[Passerelle du greffe] Les pièces jointes de ce message ont été retirées",
            "de ce serveur de messagerie : elles sont conservées chiffrées par la",
            "passerelle du greffe.",
            "",
            f"Référence : {refs}",
            "",
            "Documents retirés :",
            format_documents(documents),
            "",
            "-" * 60,
            "",
        ]
    )


def build_stub(
    raw: bytes,
    parsed: ParsedMessage,
    references: Sequence[str],
    raw_sha256: str | None = None,
) -> bytes:
    """The stub for `raw`: its headers minus content headers, the note, then its text body."""
    digest = raw_sha256 or hashlib.sha256(raw).hexdigest()
    fields, _ = split_header(raw)
    head = [f.raw for f in fields if f.name not in _DROPPED]
    marker = f"{stub_marker(digest)}; reference={','.join(references) or '-'}"
    head += [
        f"{STUB_HEADER}: {marker}".encode("ascii"),
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=utf-8",
    ]
    text = stub_note(references, document_lines(parsed)) + "\n" + parsed.text_body
    encoding, body = _encode_text(text)
    head.append(f"Content-Transfer-Encoding: {encoding}".encode("ascii"))
    return _CRLF.join(head) + _CRLF + _CRLF + body + _CRLF


def _encode_text(text: str) -> tuple[str, bytes]:
    """8bit while every line fits SMTP's 998 octets (hashes stay greppable), else QP."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if all(len(line) <= _MAX_LINE for line in data.split(b"\n")):
        return "8bit", data.replace(b"\n", _CRLF)
    return "quoted-printable", quopri.encodestring(data).replace(b"\n", _CRLF)
