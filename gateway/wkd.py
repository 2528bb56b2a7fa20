"""Web Key Directory (draft-koch-openpgp-webkey-service): where the gateway's key is published.

The direct method: a client looking up ``local@domain`` fetches
``https://domain/.well-known/openpgpkey/hu/<hash>?l=<local>``, where
``<hash>`` is the z-base-32 encoding of the SHA-1 of the lower-cased local
part, and expects the binary (non-armoured) key.  ``/.well-known/openpgpkey/policy``
must exist (it may be empty) for a client to consider the domain a WKD.

`WkdDirectory` answers those paths; the HTTP server mounts one route
on ``/.well-known/openpgpkey/`` that hands the request path to `lookup`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pysequoia
from pysequoia.packet import PacketPile, Tag

from gateway.errors import ConfigError, KeyRefused

WELL_KNOWN = "/.well-known/openpgpkey/"
POLICY_PATH = WELL_KNOWN + "policy"
KEY_MEDIA_TYPE = "application/octet-stream"
# draft section 3.1: a WKD should be readable by web clients on other origins.
_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=3600"}
_SECRET_TAGS = (Tag.SecretKey, Tag.SecretSubkey)  # Tag values are not hashable
_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def zbase32(data: bytes) -> str:
    """z-base-32 (RFC 6189 section 5.1.6 alphabet), no padding, as WKD uses it."""
    bits = int.from_bytes(data, "big")
    length = len(data) * 8
    count = -(-length // 5)  # ceil: the last group is padded with zero bits
    bits <<= count * 5 - length
    return "".join(_ZBASE32[(bits >> (5 * (count - 1 - i))) & 31] for i in range(count))


def split_address(address: str) -> tuple[str, str]:
    """(local part, lower-cased domain) of a plain ``local@domain`` address."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain or any(c in address for c in "<> \t\r\n"):
        raise ValueError(f"not a plain mail address: {address!r}")
    return local, domain.lower()


def wkd_hash(local_part: str) -> str:
    """The ``hu/`` name for a local part: z-base-32 of SHA-1 of its ASCII-lower-cased form."""
    # The draft lower-cases ASCII only (A-Z), so str.lower()'s Unicode folding is not used.
    lowered = local_part.translate(_ASCII_LOWER)
    return zbase32(hashlib.sha1(lowered.encode("utf-8"), usedforsecurity=False).digest())


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def wkd_path(address: str) -> str:
    """The direct method's path and query for ``address``: ``/.well-known/openpgpkey/hu/…?l=…``."""
    local, _domain = split_address(address)
    return f"{WELL_KNOWN}hu/{wkd_hash(local)}?l={quote(local, safe='')}"


def wkd_url(address: str) -> str:
    """The direct method's full URL for ``address``, on the address's own domain."""
    _local, domain = split_address(address)
    return f"https://{domain}{wkd_path(address)}"


@dataclass(frozen=True, slots=True)
class WkdAnswer:
    """What the HTTP route sends back for a WKD path (always status 200)."""

    body: bytes = field(repr=False)
    content_type: str
    headers: Mapping[str, str]


class WkdDirectory:
    """The keys published by WKD, by address; answers the direct (and advanced) method's paths.

    Each key is served binary, as the draft requires.  An unknown hash, or any
    other path under ``/.well-known/openpgpkey/``, gets None: the route answers 404.
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._by_hash: dict[tuple[str, str], bytes] = {}
        self._domains: set[str] = set()
        for address, key in keys.items():
            local, domain = split_address(address)
            self._by_hash[(domain, wkd_hash(local))] = binary_key(key)
            self._domains.add(domain)

    @classmethod
    def for_key_file(cls, address: str, public_key_file: Path) -> WkdDirectory:
        """One address and its key file (armoured or binary), e.g. the gateway's signing key."""
        try:
            data = public_key_file.read_bytes()
        except OSError:
            raise ConfigError(
                f"public signing key {public_key_file} is unreadable (run `gateway init`)"
            ) from None
        return cls({address: data})

    def lookup(self, path: str, host: str | None = None) -> WkdAnswer | None:
        """The answer for a request path (its query is ignored), or None for 404.

        ``host`` is the request's Host header: a direct-method path names no
        domain, so the host says which one is asked (without it: any we serve).
        """
        route = urlsplit(path).path
        if not route.startswith(WELL_KNOWN):
            return None
        parts = route[len(WELL_KNOWN) :].split("/")
        # Direct method: hu/<hash>, policy.  Advanced (on openpgpkey.<domain>):
        # <domain>/hu/<hash>, <domain>/policy.
        if len(parts) in (2, 3) and parts[-2] == "hu":
            named = parts[0] if len(parts) == 3 else None
        elif len(parts) in (1, 2) and parts[-1] == "policy":
            named = parts[0] if len(parts) == 2 else None
        else:
            return None
        domains = [d for d in self._asked(named, host) if d in self._domains]
        if parts[-1] == "policy":
            return WkdAnswer(b"", "text/plain", _HEADERS) if domains else None
        for domain in domains:
            key = self._by_hash.get((domain, parts[-1]))
            if key is not None:
                return WkdAnswer(key, KEY_MEDIA_TYPE, _HEADERS)
        return None

    def _asked(self, named: str | None, host: str | None) -> list[str]:
        if named is not None:
            return [named.lower()]
        if host:
            name = host.lower()
            if not name.endswith("]"):  # an IPv6 literal has colons of its own
                name = name.rsplit(":", 1)[0]
            return [name.removeprefix("openpgpkey.")]
        return sorted(self._domains)


def binary_key(data: bytes) -> bytes:
    """The public certificate in ``data`` (armoured or binary), binary, never a secret key."""
    try:
        secret = any(packet.tag in _SECRET_TAGS for packet in PacketPile.from_bytes(data))
        cert = None if secret else pysequoia.Cert.from_bytes(data)
    except Exception:  # the binding raises bare RuntimeErrors with parser text
        raise KeyRefused("the key to publish cannot be read as an OpenPGP key") from None
    if cert is None:
        raise KeyRefused("the key to publish holds a secret key; give the public key")
    return bytes(cert)
