"""inspect_public_key accepts a court's encryption key and refuses what cannot serve."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import gnupg
import pytest

from gateway.errors import KeyRefused
from gateway.storage.crypto import GpgKeyring
from gateway.storage.keys import generate_signing_key, inspect_public_key
from tests.fixtures.gpgkeys import (
    CourtKey,
    export_secret,
    generate_court_keypair,
    generate_expired_keypair,
    generate_expired_subkey_keypair,
    generate_sign_only_key,
    kill_agent,
    make_gnupghome,
    revocation_certificate,
)

pytestmark = pytest.mark.gpg


@pytest.fixture
def gnupghome(tmp_path: Path) -> Iterator[Path]:
    home = make_gnupghome(tmp_path)
    yield home
    kill_agent(home)


def test_court_key_accepted(court_key: CourtKey) -> None:
    info = inspect_public_key(court_key.armored_public.encode())

    assert info.fingerprint == court_key.fingerprint
    assert info.user_ids == ["Greffe TJ Test <greffe@tj-test.example>"]
    assert info.can_encrypt
    assert info.expires_at is None
    assert "PRIVATE" not in info.armored


def test_normalised_key_still_imports_and_encrypts_in_gpg(
    court_key: CourtKey, tmp_path: Path
) -> None:
    info = inspect_public_key(court_key.armored_public.encode())
    with GpgKeyring(tmp_path / "other") as keyring:
        assert keyring.import_public(info.armored) == court_key.fingerprint
        assert keyring.can_encrypt(court_key.fingerprint)


def test_binary_key_accepted(court_key: CourtKey) -> None:
    binary = gnupg.GPG(gnupghome=str(court_key.gnupghome)).export_keys(
        court_key.fingerprint, armor=False
    )

    assert inspect_public_key(binary).fingerprint == court_key.fingerprint


def test_secret_key_refused(court_key: CourtKey) -> None:
    secret = export_secret(court_key.gnupghome, court_key.fingerprint)
    assert "PRIVATE KEY" in secret

    with pytest.raises(KeyRefused, match="contains a private key; give the public key only"):
        inspect_public_key(secret.encode())


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64\n", bytes(range(256))],
)
def test_garbage_refused(garbage: bytes) -> None:
    with pytest.raises(KeyRefused, match="not an OpenPGP key"):
        inspect_public_key(garbage)


def test_two_keys_refused(court_key: CourtKey, second_court_key: CourtKey) -> None:
    both = (court_key.armored_public + second_court_key.armored_public).encode()

    with pytest.raises(KeyRefused, match="contains 2 keys; give one"):
        inspect_public_key(both)


def test_sign_only_key_refused(gnupghome: Path) -> None:
    _fingerprint, armored = generate_sign_only_key(gnupghome)

    with pytest.raises(KeyRefused, match="cannot encrypt"):
        inspect_public_key(armored.encode())


def test_expired_key_refused(gnupghome: Path) -> None:
    _fingerprint, armored = generate_expired_keypair(gnupghome)

    with pytest.raises(KeyRefused, match="expired on 2020-01-02"):
        inspect_public_key(armored.encode())


def test_key_whose_encryption_subkey_expired_refused(gnupghome: Path) -> None:
    _fingerprint, armored = generate_expired_subkey_keypair(gnupghome)

    with pytest.raises(KeyRefused, match="cannot encrypt"):
        inspect_public_key(armored.encode())


def test_expiry_follows_the_clock_seam(gnupghome: Path) -> None:
    _fingerprint, armored = generate_expired_keypair(gnupghome)

    info = inspect_public_key(armored.encode(), now=datetime(2020, 1, 1, 12, tzinfo=UTC))

    assert info.expires_at == datetime(2020, 1, 2, tzinfo=UTC)


def test_revoked_key_refused(gnupghome: Path) -> None:
    fingerprint, _armored = generate_court_keypair(gnupghome)
    gpg = gnupg.GPG(gnupghome=str(gnupghome))
    assert gpg.import_keys(revocation_certificate(gnupghome, fingerprint)).count == 1
    revoked = gpg.export_keys(fingerprint)

    with pytest.raises(KeyRefused, match="revoked"):
        inspect_public_key(revoked.encode())


def test_sequoia_made_key_refused_gnupg_could_not_decrypt() -> None:
    # Keys made by Sequoia advertise SEIPD v2 (RFC 9580): pysequoia would encrypt in a
    # format the greffe's GnuPG 2.2 cannot read, so such a key must not become a court key.
    _secret, public = generate_signing_key("Passerelle <passerelle@gateway.example>")

    with pytest.raises(KeyRefused, match=r"GnuPG 2\.2 cannot decrypt"):
        inspect_public_key(public.encode())
