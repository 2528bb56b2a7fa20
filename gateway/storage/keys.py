"""OpenPGP and DKIM key handling: inspect a court's public key, generate the gateway's own keys."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pysequoia
from pysequoia.packet import KeyFlags, Packet, PacketPile, SignatureType, Tag

from gateway.errors import KeyRefused

_SECRET_TAGS = (Tag.SecretKey, Tag.SecretSubkey)
_PRIMARY_SELF_SIGS = (
    SignatureType.PositiveCertification,
    SignatureType.GenericCertification,
    SignatureType.CasualCertification,
    SignatureType.PersonaCertification,
    SignatureType.DirectKey,
)
_MIN_DKIM_BITS = 1024  # RFC 8301 section 3.2: verifiers must refuse less
_MAX_DKIM_BITS = 8192


@dataclass(frozen=True)
class PublicKeyInfo:
    """What the gateway keeps of a court's public key once it is accepted."""

    fingerprint: str
    user_ids: list[str]
    can_encrypt: bool
    expires_at: datetime | None
    armored: str = field(repr=False)


def inspect_public_key(data: bytes, *, now: datetime | None = None) -> PublicKeyInfo:
    """Parse one public key (armored or binary) and check it can receive our data, or raise.

    ``now`` is the clock seam for the expiry checks (default: the current time).
    """
    moment = now or datetime.now(UTC)
    packets = _read_packets(data)
    if any(packet.tag in _SECRET_TAGS for packet in packets):
        raise KeyRefused("contains a private key; give the public key only")
    cert = _single_cert(data)
    fingerprint = cert.fingerprint.upper()
    if cert.is_revoked:
        raise KeyRefused(f"key {fingerprint} is revoked")
    expires_at = cert.expiration
    if expires_at is not None and expires_at <= moment:
        raise KeyRefused(f"key {fingerprint} expired on {expires_at.date().isoformat()}")
    probe = _encrypts(cert)
    if not (_has_live_encryption_key(packets, moment) and probe is not None):
        raise KeyRefused(f"key {fingerprint} cannot encrypt (no valid encryption subkey)")
    if not _gnupg_readable(probe):
        raise KeyRefused(
            f"key {fingerprint} asks for RFC 9580 encryption (SEIPD v2), which GnuPG 2.2 "
            "cannot decrypt; give a key made by GnuPG (or without the SEIPDv2 feature)"
        )
    return PublicKeyInfo(
        fingerprint=fingerprint,
        user_ids=[str(user_id) for user_id in cert.user_ids],
        can_encrypt=True,
        expires_at=expires_at,
        armored=str(cert),  # Cert's armor is the public part only
    )


def encryption_expiry(data: bytes) -> datetime | None:
    """When the key stops being able to receive data (None: never); KeyRefused if it cannot.

    The earlier of the primary key's expiry and the last expiry among its
    encryption-capable, unrevoked keys.  pysequoia's encrypt() still encrypts
    to an expired key, so the gateway keeps this moment and compares it itself.
    """
    cert = _single_cert(data)
    ends = [
        None if component.validity is None or component.created is None
        else component.created + component.validity
        for component in _components(_read_packets(data))
        if _flagged_for_encryption(component)
    ]
    if cert.is_revoked or not ends:
        raise KeyRefused(f"key {cert.fingerprint.upper()} cannot encrypt")
    last = None if None in ends else max(end for end in ends if end is not None)
    candidates = [moment for moment in (cert.expiration, last) if moment is not None]
    return min(candidates) if candidates else None


def _read_packets(data: bytes) -> list[Packet]:
    try:
        return list(PacketPile.from_bytes(data))
    except Exception:  # the binding raises bare RuntimeErrors with parser text
        raise KeyRefused("not an OpenPGP key") from None


def _single_cert(data: bytes) -> pysequoia.Cert:
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except Exception:
        raise KeyRefused("not an OpenPGP key") from None
    if not certs:
        raise KeyRefused("not an OpenPGP key")
    if len(certs) > 1:
        raise KeyRefused(f"contains {len(certs)} keys; give one")
    return certs[0]


def _encrypts(cert: pysequoia.Cert) -> bytes | None:
    """A probe encrypted to the key, or None when Sequoia's policy finds no usable subkey."""
    try:
        return bytes(pysequoia.encrypt(b"probe", [cert], armor=False))
    except Exception:
        return None


def _gnupg_readable(ciphertext: bytes) -> bool:
    """Whether the probe uses SEIPD v1, the only encrypted-data format GnuPG 2.2 reads.

    Sequoia picks SEIPD v2 (RFC 9580) for keys that advertise it, as keys made
    by Sequoia do; the greffe's gpg could then not decrypt what we store.
    """
    for packet in PacketPile.from_bytes(ciphertext):
        if packet.tag == Tag.SEIP:
            return bytes(packet.body[:1]) == b"\x01"
    return False


@dataclass
class _Component:
    """A primary key or subkey, and what its latest self-signature says about it."""

    key_id: str
    fingerprint: str
    created: datetime | None
    flags: KeyFlags | None = None
    validity: timedelta | None = None
    signed_at: datetime | None = None
    revoked: bool = False


def _has_live_encryption_key(packets: Iterable[Packet], now: datetime) -> bool:
    """Whether some encryption-capable key is neither revoked nor expired.

    pysequoia's encrypt() falls back to expired keys on purpose, so expiry is
    read from the binding signatures here; their cryptographic validity is
    left to the trial encryption in ``_encrypts``.
    """
    return any(_alive_for_encryption(component, now) for component in _components(packets))


def _components(packets: Iterable[Packet]) -> list[_Component]:
    components: list[_Component] = []
    primary: _Component | None = None
    for packet in packets:
        if packet.tag in (Tag.PublicKey, Tag.PublicSubkey):
            component = _Component(
                key_id=packet.key_id or "",
                fingerprint=packet.fingerprint or "",
                created=packet.key_created,
            )
            primary = component if packet.tag == Tag.PublicKey else primary
            components.append(component)
        elif packet.tag == Tag.Signature and primary is not None and components:
            _apply_signature(components[-1], primary, packet)
    return components


def _apply_signature(component: _Component, primary: _Component, sig: Packet) -> None:
    if sig.issuer_fingerprint not in (None, primary.fingerprint) or (
        sig.issuer_fingerprint is None and sig.issuer_key_id != primary.key_id
    ):
        return  # a third-party certification says nothing about key usage
    kind = sig.signature_type
    if kind in (SignatureType.KeyRevocation, SignatureType.SubkeyRevocation):
        component.revoked = True
        return
    wanted = _PRIMARY_SELF_SIGS if component is primary else (SignatureType.SubkeyBinding,)
    if kind not in wanted:
        return
    created = sig.signature_created
    if component.signed_at is None or (created is not None and created >= component.signed_at):
        component.flags = sig.key_flags
        component.validity = sig.key_validity_period
        component.signed_at = created


def _flagged_for_encryption(component: _Component) -> bool:
    """Whether the key is flagged for encryption and not revoked, whatever its expiry."""
    flags = component.flags
    if component.revoked or flags is None:
        return False
    return bool(flags.storage_encryption or flags.transport_encryption)


def _alive_for_encryption(component: _Component, now: datetime) -> bool:
    if not _flagged_for_encryption(component):
        return False
    if component.validity is None or component.created is None:
        return True
    return component.created + component.validity > now


def generate_signing_key(user_id: str) -> tuple[str, str]:
    """Generate the gateway's receipt-signing key: (armored secret key, armored public key).

    No passphrase: the secret lives in a 0600 file.  RFC 4880 (v4) keys, so
    that GnuPG 2.2 on the recipients' side can verify the signatures.
    """
    tsk = pysequoia.Tsk.generate(user_id, profile=pysequoia.Profile.RFC4880)
    return str(tsk), str(tsk.extract_certificate())


def generate_dkim_key(bits: int = 2048) -> tuple[bytes, str]:
    """Generate an RSA DKIM key: (private key PEM, base64 public key for the TXT ``p=`` tag).

    Uses the ``openssl`` command (the ``cryptography`` package is not a
    dependency); the private key travels through pipes only, never a file.
    """
    if not _MIN_DKIM_BITS <= bits <= _MAX_DKIM_BITS:
        raise ValueError(f"DKIM key size must be {_MIN_DKIM_BITS}-{_MAX_DKIM_BITS} bits")
    private_pem = _openssl(["genrsa", "-traditional", str(bits)], None)
    public_der = _openssl(["rsa", "-pubout", "-outform", "DER"], private_pem)
    return private_pem, base64.b64encode(public_der).decode("ascii")


def _openssl(args: list[str], stdin: bytes | None) -> bytes:
    result = subprocess.run(
        ["openssl", *args], input=stdin, capture_output=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed with status {result.returncode}")
    return result.stdout
