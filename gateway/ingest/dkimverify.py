"""dkimpy's verifier, fed the header block only; the body hash is checked by streaming.

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
)
from dkim.crypto import HASH_ALGORITHMS

from gateway.ingest.dkimbody import body_hash, body_start

_WHITESPACE = re.compile(rb"\s+")

# (body canonicalization, a=, l=) -> digest: several signatures on one message
# usually share them, and hashing 25 MB once is enough.
_DigestKey = tuple[bytes, bytes, int | None]


class StreamingDKIM(dkim.DKIM):  # type: ignore[misc]  # dkimpy ships no type hints
    """A ``dkim.DKIM`` verifier that never holds a copy of the body.

    ``raw`` is kept by reference; only its header block is given to dkimpy.
    """

    def __init__(self, raw: bytes, *, logger: logging.Logger) -> None:
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
            digest = body_hash(
                self._raw, self._body_start, key[0], HASH_ALGORITHMS[algorithm], length
            )
            self._digests[key] = digest
        expected = base64.b64decode(_WHITESPACE.sub(b"", sig[b"bh"]))
        if digest != expected:
            raise dkim.ValidationError(
                f"body hash mismatch (got {base64.b64encode(digest)!r}, expected {sig[b'bh']!r})"
            )
