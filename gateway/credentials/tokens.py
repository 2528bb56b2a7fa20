"""A credential's secret: its `<lookup id>.<secret>` form, and its argon2id hash.

The lookup id finds the one row whose slow hash is checked, so a guess
costs the gateway one argon2id computation, never one per stored
credential.  argon2-cffi compares the derived hash in constant time
(libargon2's `argon2_verify`).
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

RandBytes = Callable[[int], bytes]

LOOKUP_BYTES = 8
"""The public part: 16 hex digits."""
SECRET_BYTES = 32
"""The secret part: 256 bits (SPEC §2 asks for at least 128), 43 base64url characters."""
_FORM = re.compile(r"([0-9a-f]{16})\.([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A freshly drawn secret: shown once to the administrator, then only its hash is kept."""

    lookup_id: str
    text: str = field(repr=False)


def new_secret(randbytes: RandBytes = secrets.token_bytes) -> NewSecret:
    lookup_id = randbytes(LOOKUP_BYTES).hex()
    secret = base64.urlsafe_b64encode(randbytes(SECRET_BYTES)).rstrip(b"=").decode("ascii")
    return NewSecret(lookup_id, f"{lookup_id}.{secret}")


def lookup_id_of(text: str) -> str | None:
    """The lookup id of something presented as a secret, or None if it has not the form."""
    match = _FORM.fullmatch(text.strip())
    return match.group(1) if match else None


class CredentialHasher:
    """argon2id with RFC 9106's second recommended profile (64 MiB, 3 passes) by default."""

    def __init__(self, *, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4):
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )

    def hash(self, text: str) -> str:
        return self._hasher.hash(text.strip())

    def verify(self, stored: str, text: str) -> bool:
        try:
            return bool(self._hasher.verify(stored, text.strip()))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """The hash was made with other parameters than today's: redo it on a good login."""
        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except InvalidHashError:
            return False

    def burn(self, text: str) -> None:
        """Spend one verification on a secret whose row does not exist.

        An unknown lookup id then takes as long to refuse as a wrong secret,
        so timing does not tell which ids exist.
        """
        self.verify(self._dummy, text)

    @functools.cached_property
    def _dummy(self) -> str:
        return self._hasher.hash(secrets.token_urlsafe(SECRET_BYTES))
