"""What the gateway stores (pysequoia) is decrypted by stock gpg, with any one court key."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.errors import KeyRefused
from gateway.storage.crypto import Encryptor, GpgKeyring
from tests.fixtures.gpgkeys import CourtKey

pytestmark = pytest.mark.gpg

SIZES = {"empty": 0, "100KB": 100 * 1024, "5MB": 5 * 1024 * 1024}


@pytest.fixture(scope="module")
def encryptor(court_key: CourtKey, second_court_key: CourtKey) -> Encryptor:
    return Encryptor.for_keys([court_key.armored_public, second_court_key.armored_public])


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_each_court_key_decrypts_byte_identical(
    encryptor: Encryptor, court_key: CourtKey, second_court_key: CourtKey, size: int
) -> None:
    plaintext = os.urandom(size)

    message = encryptor.encrypt(plaintext)

    assert plaintext[:64] not in message or size == 0
    for key in (court_key, second_court_key):
        with GpgKeyring(key.gnupghome) as keyring:
            assert keyring.decrypt(message) == plaintext


def test_output_is_binary_openpgp(encryptor: Encryptor) -> None:
    message = encryptor.encrypt(b"hello")

    assert not message.startswith(b"-----BEGIN")
    assert message[0] & 0x80  # an OpenPGP packet header, not text


def test_encryptor_names_its_keys(
    encryptor: Encryptor, court_key: CourtKey, second_court_key: CourtKey
) -> None:
    assert encryptor.fingerprints == (court_key.fingerprint, second_court_key.fingerprint)


def test_encrypt_from_worker_threads(encryptor: Encryptor, court_key: CourtKey) -> None:
    payloads = [os.urandom(2048) + bytes([n]) for n in range(16)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        messages = list(pool.map(encryptor.encrypt, payloads))

    with GpgKeyring(court_key.gnupghome) as keyring:
        assert [keyring.decrypt(message) for message in messages] == payloads


def test_court_without_keys_refused() -> None:
    with pytest.raises(KeyRefused, match="no active encryption key"):
        Encryptor.for_keys([])


def test_unreadable_court_key_refused() -> None:
    with pytest.raises(KeyRefused, match="cannot be read"):
        Encryptor.for_keys(["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n"])
