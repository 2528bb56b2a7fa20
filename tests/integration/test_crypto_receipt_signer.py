"""Receipt signatures made in-process verify with stock gpg; the keyring reports its failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import KeyRefused
from gateway.storage.crypto import Encryptor, GpgKeyring, ReceiptSigner
from gateway.storage.keys import generate_signing_key
from tests.fixtures.gpgkeys import CourtKey

pytestmark = pytest.mark.gpg

RECEIPT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nAccus\xc3\xa9 de r\xc3\xa9ception\r\n"


@pytest.fixture(scope="module")
def signer() -> ReceiptSigner:
    secret, _public = generate_signing_key("Passerelle TJ <passerelle@gateway.example>")
    return ReceiptSigner(secret)


@pytest.fixture
def keyring(tmp_path: Path, signer: ReceiptSigner) -> Iterator[GpgKeyring]:
    ring = GpgKeyring(tmp_path / "gnupg")
    assert ring.import_public(signer.public_key) == signer.fingerprint
    yield ring
    ring.close()


def test_gpg_verifies_receipt_signature(signer: ReceiptSigner, keyring: GpgKeyring) -> None:
    signature = signer.sign_detached(RECEIPT)

    assert signature.startswith("-----BEGIN PGP SIGNATURE-----")
    assert keyring.verify_detached(RECEIPT, signature, fingerprint=signer.fingerprint)


def test_gpg_rejects_altered_receipt(signer: ReceiptSigner, keyring: GpgKeyring) -> None:
    signature = signer.sign_detached(RECEIPT)

    assert not keyring.verify_detached(RECEIPT.replace(b"Accus", b"Refus"), signature)


def test_verify_checks_the_expected_signer(signer: ReceiptSigner, keyring: GpgKeyring) -> None:
    signature = signer.sign_detached(RECEIPT)

    assert not keyring.verify_detached(RECEIPT, signature, fingerprint="0" * 40)


def test_micalg_names_the_hash(signer: ReceiptSigner) -> None:
    assert signer.micalg in {"pgp-sha256", "pgp-sha384", "pgp-sha512"}


def test_signer_hides_its_key(signer: ReceiptSigner) -> None:
    assert "PRIVATE" not in repr(signer)
    assert signer.fingerprint in repr(signer)


def test_public_key_is_not_a_signing_key() -> None:
    _secret, public = generate_signing_key("Passerelle <p@gateway.example>")

    with pytest.raises(KeyRefused, match="no secret key"):
        ReceiptSigner(public)


def test_decrypt_without_secret_key_refused(court_key: CourtKey, keyring: GpgKeyring) -> None:
    message = Encryptor.for_keys([court_key.armored_public]).encrypt(b"not for this keyring")

    with pytest.raises(KeyRefused, match="no secret key"):
        keyring.decrypt(message)


def test_keyring_home_is_private(tmp_path: Path) -> None:
    with GpgKeyring(tmp_path / "a" / "gnupg") as ring:
        assert ring.home.stat().st_mode & 0o077 == 0
