"""Client-controlled text made safe for a log line or an SMTP reply: control characters as `\\xNN`.

A verb, an address or a host name typed by a client can hold ESC (terminal
control sequences), CR and LF (forged log lines, a second reply line), DEL
or bidi overrides.  `escape` keeps printable ASCII as it is and shows
everything else as an escape sequence, so what it returns is one line of
printable ASCII whatever came in.  The backslash itself is doubled, so an
escaped text cannot pass for another one.

`printable` is for text a person reads on a terminal (a record `gateway
doctor` fetched, a clerk's reason in `requests list`): accents stay, anything
that is not printable becomes "?".
"""

from __future__ import annotations

import re

_SAFE = re.compile(r"[\x20-\x5b\x5d-\x7e]*")
_SAFE_BYTES = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")
_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)
"""How `surrogateescape` decoding keeps the undecodable bytes 0x80-0xFF of a command line."""


def escape(text: str | bytes, limit: int = 300) -> str:
    """`text` as printable ASCII, at most about `limit` characters (an ellipsis marks a cut)."""
    if isinstance(text, bytes):
        data = text[:limit]
        shown = data.decode("ascii") if _SAFE_BYTES.fullmatch(data) else _escape_bytes(data)
    else:
        cut = text[:limit]
        shown = cut if _SAFE.fullmatch(cut) else "".join(map(_escape_char, cut))
    return shown + "..." if len(text) > limit else shown


def _escape_char(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if 0x20 <= code <= 0x7E:
        return char
    if code in _SURROGATE_ESCAPES:
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_bytes(data: bytes) -> str:
    return "".join(
        "\\\\" if byte == 0x5C else chr(byte) if 0x20 <= byte <= 0x7E else f"\\x{byte:02x}"
        for byte in data
    )


def printable(text: str, limit: int | None = 160) -> str:
    """Text shown to a person on a terminal (a DNS record, a banner, a clerk's reason) as one
    line: accents kept, every control character, line break or bidi override as "?", cut
    to ``limit`` characters with an ellipsis (None: never cut)."""
    line = text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
