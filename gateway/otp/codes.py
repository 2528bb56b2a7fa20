"""One-time codes and credentials: generate, format, parse, find in mail, and hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base-32: no I, L, O (read as 1, 1, 0) and no U."""

CODE_SYMBOLS = 10
CODE_BITS = 5 * CODE_SYMBOLS
MIN_SERVER_SECRET_BYTES = 32

_SYMBOL_VALUE = {symbol: value for value, symbol in enumerate(ALPHABET)}
# Crockford decoding: the letters people confuse with digits read as those digits.
_FOLD = str.maketrans({"I": "1", "L": "1", "O": "0"})
_CANDIDATE = r"[0-9A-Za-z]{5}-?[0-9A-Za-z]{5}"
# A bracket may hold surrounding spaces: "[ 7K3QD-M2X9A ]".
_BRACKETED_RE = re.compile(rf"\[\s*({_CANDIDATE})\s*\]")
# Whole words only: no word character or dash may touch either end, so
# "REF-7K3QDM2X9A" or "7K3QD-M2X9A-2" are not codes.
_WORD_RE = re.compile(rf"(?<![\w-])({_CANDIDATE})(?![\w-])")
_HAS_DIGIT_RE = re.compile(r"[0-9]")
_HAS_LETTER_RE = re.compile(r"[A-Za-z]")

RandBytes = Callable[[int], bytes]


def _encode(value: int, symbols: int) -> str:
    """Big-endian Crockford base-32 of ``value``, exactly ``symbols`` long."""
    out = []
    for _ in range(symbols):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def generate_code(randbytes: RandBytes = secrets.token_bytes) -> str:
    """Return a fresh code in canonical form (10 symbols, no dash), uniform over 50 bits."""
    raw = randbytes(7)
    if len(raw) != 7:
        raise ValueError("randbytes returned the wrong number of bytes")
    # 56 random bits; dropping the low 6 keeps the remaining 50 uniform.
    return _encode(int.from_bytes(raw, "big") >> 6, CODE_SYMBOLS)


def format_code(canonical: str) -> str:
    """Show a canonical code as two groups of five: ``7K3QD-M2X9A``."""
    return f"{canonical[:5]}-{canonical[5:]}"


def normalise_code(text: str) -> str | None:
    """Return the canonical form of a typed code, or None if it is not one.

    Accepts surrounding spaces, any case, and the dash between the groups or
    none.  I and L read as 1, O as 0 (Crockford); U is never valid.
    """
    folded = text.strip().upper()
    if len(folded) == CODE_SYMBOLS + 1 and folded[5] == "-":
        folded = folded[:5] + folded[6:]
    folded = folded.translate(_FOLD)
    if len(folded) != CODE_SYMBOLS or not all(ch in _SYMBOL_VALUE for ch in folded):
        return None
    return folded


def find_code_in_subject(subject: str) -> str | None:
    """Return the canonical code found in a subject line, or None.

    Recognised, best first:

    1. a bracketed code, ``[7K3QD-M2X9A]`` or ``[7K3QDM2X9A]``;
    2. a whole word in the dashed ``5-5`` form, or a whole undashed 10-character
       word, *holding at least one digit and one letter*;
    3. a whole word in the dashed ``5-5`` form made only of letters, or only of
       digits (a dashed word like "avant-garde" is a weak candidate).

    An undashed, unbracketed word without a digit is never taken: plenty of
    ten-letter French words (INVENTAIRE, PROTECTION, ADMINISTRE…) spell valid
    Crockford codes.  The price is that the roughly 2 % of codes drawn without
    any digit are recognised only bracketed or dashed — the form the gateway
    always shows.  Within a rank, the first valid code in the subject wins.
    """
    for match in _BRACKETED_RE.finditer(subject):
        code = normalise_code(match.group(1))
        if code is not None:
            return code
    weak: str | None = None
    for match in _WORD_RE.finditer(subject):
        word = match.group(1)
        code = normalise_code(word)
        if code is None:
            continue
        if _HAS_DIGIT_RE.search(word) and _HAS_LETTER_RE.search(word):
            return code
        if "-" in word and weak is None:
            weak = code
    return weak


def find_code_in_subaddress(local_part: str, separator: str = "+") -> str | None:
    """Return the code carried as a sub-address (``depot+7K3QDM2X9A``), or None."""
    _base, sep, tag = local_part.partition(separator)
    if not sep:
        return None
    return normalise_code(tag)


def _require_secret(secret: bytes) -> bytes:
    if len(secret) < MIN_SERVER_SECRET_BYTES:
        raise ValueError(f"server secret must be at least {MIN_SERVER_SECRET_BYTES} bytes")
    return bytes(secret)


def _keyed(secret: bytes, purpose: bytes, value: str) -> bytes:
    # The purpose label keeps the digests of codes, credentials and lookup ids
    # apart even though they share one server secret.
    return hmac.new(secret, purpose + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()


def _same(left: str, right: str) -> bool:
    """Constant-time comparison that tolerates a non-ASCII stored value."""
    return hmac.compare_digest(
        left.encode("utf-8", "surrogatepass"), right.encode("utf-8", "surrogatepass")
    )


class CodeHasher:
    """Keyed hash of codes (HMAC-SHA256 with the server secret): only this is stored."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        self._secret = _require_secret(secret)

    def __repr__(self) -> str:
        return "CodeHasher(secret=***)"

    def digest(self, canonical: str) -> str:
        """Hex HMAC of a canonical code."""
        return _keyed(self._secret, b"gateway.code", canonical).hex()

    def matches(self, canonical: str, stored_hex: str) -> bool:
        """True when ``canonical`` hashes to ``stored_hex``, compared in constant time."""
        return _same(self.digest(canonical), stored_hex.lower())


def generate_secret(randbytes: RandBytes = secrets.token_bytes) -> str:
    """Return a new teletransmission credential: ``gtw_`` and 160 random bits."""
    raw = randbytes(20)
    if len(raw) != 20:
        raise ValueError("randbytes returned the wrong number of bytes")
    return "gtw_" + _encode(int.from_bytes(raw, "big"), 32).lower()


class SecretHasher:
    """Slow, salted and peppered hash of long-lived credentials (scrypt).

    The secret is first keyed with the server secret (HMAC, the *pepper*), so
    a stolen database alone does not allow an offline guess; scrypt with a
    per-secret salt then makes each guess expensive.  Stored form:
    ``scrypt$n$r$p$salt_hex$hash_hex``.
    """

    __slots__ = ("_n", "_p", "_r", "_randbytes", "_secret")
    # Bounds on parameters read back from storage, so a tampered row cannot
    # make verification allocate gigabytes.
    _MAX_N = 2**20
    _MAX_RP = 64

    def __init__(
        self,
        secret: bytes,
        n: int = 2**14,
        r: int = 8,
        p: int = 1,
        randbytes: RandBytes = secrets.token_bytes,
    ) -> None:
        self._secret = _require_secret(secret)
        if not self._valid_params(n, r, p):
            raise ValueError("scrypt parameters out of range")
        self._n, self._r, self._p = n, r, p
        self._randbytes = randbytes

    def __repr__(self) -> str:
        return f"SecretHasher(n={self._n}, r={self._r}, p={self._p}, secret=***)"

    @classmethod
    def _valid_params(cls, n: int, r: int, p: int) -> bool:
        power_of_two = n > 1 and n & (n - 1) == 0
        return power_of_two and n <= cls._MAX_N and 1 <= r <= cls._MAX_RP and 1 <= p <= cls._MAX_RP

    def _derive(self, secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        peppered = _keyed(self._secret, b"gateway.credential", secret)
        maxmem = 256 * n * r + 128 * r * p + (1 << 20)
        return hashlib.scrypt(peppered, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)

    def hash(self, secret: str) -> str:
        """Return the stored form of ``secret``."""
        salt = self._randbytes(16)
        derived = self._derive(secret, salt, self._n, self._r, self._p)
        return f"scrypt${self._n}${self._r}${self._p}${salt.hex()}${derived.hex()}"

    def verify(self, secret: str, stored: str) -> bool:
        """True when ``secret`` matches ``stored``; malformed stored values never match."""
        parts = stored.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            return False
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        except ValueError:
            return False
        if not self._valid_params(n, r, p) or not salt or len(expected) != 32:
            return False
        return hmac.compare_digest(self._derive(secret, salt, n, r, p), expected)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` was made with other parameters than this hasher's."""
        return not stored.startswith(f"scrypt${self._n}${self._r}${self._p}$")

    def lookup_id(self, secret: str) -> str:
        """A fast keyed fingerprint (16 hex digits) to find a credential by an indexed column."""
        return _keyed(self._secret, b"gateway.lookup", secret).hex()[:16]
