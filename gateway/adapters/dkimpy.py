"""dkimpy's internals used by the gateway: a verifier fed the header block only, its steps.

This is the one module that knows dkimpy beyond its public `dkim.verify`:
the `DomainSigner.verify_sig_process` seam, `verify_headerprep` /
`verify_sig` (the two halves of `DKIM.verify`, so the gateway's signature
policy can look at a signature's tags before its key is fetched), the
`signature_fields`, `ktag` and `keysize` attributes they leave behind, and
the canonicalization and hash tables.  When dkimpy changes, re-read
`dkim/__init__.py` (`DKIM.verify`, `DomainSigner.verify_sig_process`,
`verify_headerprep`, `verify_sig`) against the functions below.

The streaming verifier:

Why: ``dkim.DKIM(message)`` splits the whole message into lines, keeps a
joined copy of the body and canonicalises it with whole-body regexes: about
3.5 times a 25 MB message at peak. Everything else dkimpy does is cheap and
well tested (tag parsing, header canonicalisation, key records, RSA and
ed25519), so it keeps doing it.

The seam is ``DomainSigner.verify_sig_process``: dkimpy calls it after the key
lookup with the parsed tags, and it checks bh= only when the tags hold one.
The override checks bh= itself (``gateway.ingest.dkimbody``), then hands dkimpy
the tags without bh= so that it verifies b= over the headers alone. The order
of dkimpy's steps is kept: the DNS lookup comes first, so a DNS outage is
still reported for a message whose body hash does not match.

The gateway's signature policy (no l=, no rsa-sha1, key size, signed headers)
is applied by ``gateway.ingest.senderauth``, not here: this class gives plain
dkimpy's verdicts.

Fail-safe: dkimpy is given no body, so if a later dkimpy stopped calling this
method it would hash an empty body and every signature would fail, never pass.
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

import dkim
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    compress_whitespace,
    strip_trailing_whitespace,
)
from dkim.crypto import HASH_ALGORITHMS

LIBRARY = "dkimpy"
WRITTEN_AGAINST = "1.1.8"

__all__ = [
    "HASH_ALGORITHMS",
    "LIBRARY",
    "WRITTEN_AGAINST",
    "StreamingDKIM",
    "compress_whitespace",
    "key_facts",
    "prepare",
    "signature_fields",
    "strip_trailing_whitespace",
    "verify_prepared",
]

_WHITESPACE = re.compile(rb"\s+")

# (body canonicalization, a=, l=) -> digest: several signatures on one message
# usually share them, and hashing 25 MB once is enough.
_DigestKey = tuple[bytes, bytes, int | None]


class StreamingDKIM(dkim.DKIM):  # type: ignore[misc]  # dkimpy ships no type hints
    """A ``dkim.DKIM`` verifier that never holds a copy of the body.

    ``raw`` is kept by reference; only its header block is given to dkimpy.
    """

    def __init__(self, raw: bytes, *, logger: logging.Logger) -> None:
        from gateway.ingest.dkimbody import body_start  # dkimbody imports this module

        start = body_start(raw)
        super().__init__(raw[:start], logger=logger)
        self._raw = raw
        self._body_start = start
        self._digests: dict[_DigestKey, bytes] = {}

    def verify_sig_process(
        self,
        sig: dict[bytes, bytes],
        include_headers: list[bytes],
        sig_header: tuple[bytes, bytes],
        dnsfunc: Any,
    ) -> bool:
        """Check bh= by streaming, then let dkimpy verify b= over the headers."""
        if b"bh" in sig:
            self._check_body_hash(sig)
            sig = {name: value for name, value in sig.items() if name != b"bh"}
        return bool(super().verify_sig_process(sig, include_headers, sig_header, dnsfunc))

    def _check_body_hash(self, sig: dict[bytes, bytes]) -> None:
        """Raise a DKIMException (or ValueError, as dkimpy would) unless bh= matches."""
        try:
            policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError as exc:
            raise dkim.MessageFormatError(f"invalid c= value: {exc.args[0]!r}") from None
        algorithm = sig[b"a"]
        length = int(sig[b"l"]) if b"l" in sig and not self.tlsrpt else None
        key: _DigestKey = (policy.body_algorithm.name, algorithm, length)
        digest = self._digests.get(key)
        if digest is None:
            from gateway.ingest.dkimbody import body_hash  # dkimbody imports this module

            digest = body_hash(
                self._raw, self._body_start, key[0], HASH_ALGORITHMS[algorithm], length
            )
            self._digests[key] = digest
        expected = base64.b64decode(_WHITESPACE.sub(b"", sig[b"bh"]))
        if digest != expected:
            raise dkim.ValidationError(
                f"body hash mismatch (got {base64.b64encode(digest)!r}, expected {sig[b'bh']!r})"
            )


def header_names(verifier: StreamingDKIM) -> list[bytes]:
    """The names of the message's header fields, in order, as dkimpy parsed them."""
    return [name for name, _value in verifier.headers]


def headers(verifier: StreamingDKIM) -> list[tuple[bytes, bytes]]:
    """The message's header fields (name, value) as dkimpy parsed them."""
    return list(verifier.headers)


def prepare(verifier: StreamingDKIM, idx: int) -> Any:
    """dkimpy's first half of `verify(idx)`: (tags, include_headers, signature headers) or falsy.

    Clears the fields a previous signature left, so a failure leaves none behind.
    """
    verifier.signature_fields = None
    return verifier.verify_headerprep(idx)


def signature_fields(verifier: StreamingDKIM) -> dict[bytes, bytes]:
    """The tags of the signature `prepare` looked at last (empty when it could not parse them)."""
    return dict(verifier.signature_fields or {})


def verify_prepared(
    verifier: StreamingDKIM,
    tags: dict[bytes, bytes],
    include_headers: list[bytes],
    signature_header: tuple[bytes, bytes],
    dnsfunc: Any,
) -> bool:
    """dkimpy's second half of `verify`: fetch the key, check bh= and b=."""
    verifier.ktag = verifier.keysize = None  # no stale key from the previous signature
    return bool(verifier.verify_sig(tags, include_headers, signature_header, dnsfunc))


def key_facts(verifier: StreamingDKIM) -> tuple[bytes | None, int | None]:
    """The key type (k=) and size in bits of the key `verify_prepared` fetched last."""
    return getattr(verifier, "ktag", None), getattr(verifier, "keysize", None)
