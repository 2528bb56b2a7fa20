"""Text inside MIME: charsets, RFC 2047 encoded words, RFC 2231 parameters, HTML to text."""

from __future__ import annotations

import binascii
import codecs
import re
from html import unescape
from urllib.parse import unquote

_WORD = r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?="
_WORD_RE = re.compile(_WORD)
_WORD_RUN_RE = re.compile(rf"{_WORD}(?:\s+{_WORD})*")
_SPECIALS = frozenset('()<>[]:;@\\,."')
# Codecs that are not mail charsets: slow (punycode is quadratic) or not byte decoders.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})
_ASCII_NAMES = frozenset({"ascii", "us-ascii", "ansi_x3.4-1968", "646"})
# HTML rendering; each pattern stops at the end of input or at the next "<", so
# unclosed constructs cannot make it quadratic.  An unclosed <head> ends at <body>.
_HTML_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_HTML_HIDDEN_RE = re.compile(
    r"<(script|style|title|template)\b.*?(?:</\1\s*>|\Z)|<head\b.*?(?:</head\s*>|(?=<body\b)|\Z)",
    re.S | re.I,
)
_HTML_BLOCK_TAG_RE = re.compile(  # alternatives grouped by first letter: fails fast
    r"</?(?:a(?:ddress|rticle|side)|b(?:lockquote|r)|d(?:[dlt]|iv)|f(?:ooter|orm)|h(?:[1-6r]|eader)"
    r"|li|main|nav|ol|p(?:re)?|section|t(?:[dhr]|able)|ul)\b[^<>]*>",
    re.I,
)
_HTML_OTHER_TAG_RE = re.compile(r"<[!/?a-zA-Z][^<>]*>")
_TEXT_BLANK_LINES_RE = re.compile(r"\n{3,}")


def _codec(charset: str | None) -> str | None:
    """Return a usable Python codec name for a declared charset, or None."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower()
    if name in _ASCII_NAMES:
        return None  # 8-bit text labelled us-ascii is common; guess instead
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError):
        return None
    return None if codec in _NOT_CHARSETS else codec


def decode_bytes(data: bytes, charset: str | None) -> str:
    codec = _codec(charset)
    if codec is not None:
        try:
            return data.decode(codec, "replace")
        except (LookupError, UnicodeError, ValueError):
            pass
    return decode_8bit(data)


def decode_8bit(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_text(payload: bytes, charset: str | None) -> str:
    return decode_bytes(payload, charset).replace("\r\n", "\n")


def _word_bytes(match: re.Match[str]) -> tuple[str, bytes] | None:
    charset, encoding, text = match.group(1, 2, 3)
    data = text.encode("utf-8")
    try:
        if encoding in "qQ":
            return charset.split("*")[0], binascii.a2b_qp(data, header=True)
        return charset.split("*")[0], binascii.a2b_base64(
            data + b"=" * (-len(data) % 4), strict_mode=True
        )
    except binascii.Error:
        return None


def _decode_run(run: str) -> str:
    """Decode adjacent encoded words; bytes of one charset are joined before decoding."""
    pieces: list[tuple[str, bytes]] = []
    for match in _WORD_RE.finditer(run):
        decoded = _word_bytes(match)
        if decoded is None:
            return run
        if pieces and pieces[-1][0].lower() == decoded[0].lower():
            pieces[-1] = (decoded[0], pieces[-1][1] + decoded[1])
        else:
            pieces.append(decoded)
    return "".join(decode_bytes(data, charset) for charset, data in pieces)


def decode_words(value: str, *, phrase: bool = False) -> str:
    """Decode RFC 2047 encoded words; in a phrase, quote text holding address specials."""

    def replace(match: re.Match[str]) -> str:
        text = _decode_run(match.group(0))
        if not phrase or not _SPECIALS.intersection(text):
            return text
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        inside_quotes = value.count('"', 0, match.start()) % 2 == 1
        return escaped if inside_quotes else f'"{escaped}"'

    return _WORD_RUN_RE.sub(replace, value) if "=?" in value else value


def param_text(value: str | tuple[str | None, str | None, str]) -> str:
    if isinstance(value, tuple):  # RFC 2231: (charset, language, %-decoded text as Latin-1)
        charset, _language, text = value
        return decode_bytes(text.encode("raw-unicode-escape"), charset)
    return decode_words(unquote(value.strip().strip('"')))


def html_to_text(html: str) -> str:
    """Render HTML as plain text in a few linear passes (HTMLParser manages ~1 MB/s)."""
    text = _HTML_HIDDEN_RE.sub(" ", _HTML_COMMENT_RE.sub(" ", html.replace("\0", "")))
    # Block elements become NUL marks, so that one split() can fold all the source's whitespace.
    text = unescape(_HTML_OTHER_TAG_RE.sub("", _HTML_BLOCK_TAG_RE.sub("\0", text)))
    text = " ".join(text.split()).replace(" \0", "\0").replace("\0 ", "\0")
    return _TEXT_BLANK_LINES_RE.sub("\n\n", text.replace("\0", "\n")).strip()
