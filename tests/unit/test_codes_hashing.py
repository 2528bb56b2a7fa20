"""Keyed hashes of codes, credentials and lookup ids."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.otp.codes import CodeHasher, SecretHasher, generate_secret

SERVER_SECRET = b"s" * 32
OTHER_SECRET = b"t" * 32


def fast_hasher(secret: bytes = SERVER_SECRET) -> SecretHasher:
    """Cheap scrypt parameters keep the tests fast; the defaults are tested once."""
    return SecretHasher(secret, n=2**10, r=8, p=1)


def test_codes_hasher_refuses_short_secret() -> None:
    with pytest.raises(ValueError):
        CodeHasher(b"s" * 31)
    with pytest.raises(ValueError):
        fast_hasher(b"")


def test_codes_hasher_digest_is_keyed_hmac_sha256() -> None:
    digest = CodeHasher(SERVER_SECRET).digest("7K3QDM2X9A")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert digest != hashlib.sha256(b"7K3QDM2X9A").hexdigest()
    assert digest != CodeHasher(OTHER_SECRET).digest("7K3QDM2X9A")
    assert digest == CodeHasher(SERVER_SECRET).digest("7K3QDM2X9A")


def test_codes_hasher_matches() -> None:
    hasher = CodeHasher(SERVER_SECRET)
    stored = hasher.digest("7K3QDM2X9A")
    assert hasher.matches("7K3QDM2X9A", stored)
    assert hasher.matches("7K3QDM2X9A", stored.upper())
    assert not hasher.matches("7K3QDM2X9B", stored)
    assert not CodeHasher(OTHER_SECRET).matches("7K3QDM2X9A", stored)
    assert not hasher.matches("7K3QDM2X9A", "")
    assert not hasher.matches("7K3QDM2X9A", "é" * 64)


def test_codes_hasher_compares_with_compare_digest() -> None:
    # hmac.compare_digest is the constant-time primitive; pin that the result
    # agrees with it, not with a short-circuiting ==, on a near-miss.
    hasher = CodeHasher(SERVER_SECRET)
    stored = hasher.digest("7K3QDM2X9A")
    near_miss = stored[:-1] + ("0" if stored[-1] != "0" else "1")
    assert hmac.compare_digest(stored.encode(), near_miss.encode()) is False
    assert hasher.matches("7K3QDM2X9A", near_miss) is False


def test_codes_hashers_hide_secret_in_repr() -> None:
    assert "sss" not in repr(CodeHasher(SERVER_SECRET))
    assert "sss" not in repr(fast_hasher())


def test_codes_generate_secret_has_160_bits() -> None:
    secret = generate_secret(lambda size: b"\xff" * size)
    assert secret == "gtw_" + "z" * 32
    assert generate_secret(lambda size: b"\x00" * size) == "gtw_" + "0" * 32
    assert len({generate_secret() for _ in range(50)}) == 50


def test_codes_generate_secret_refuses_short_randomness() -> None:
    with pytest.raises(ValueError):
        generate_secret(lambda size: b"\x00" * 8)


def test_codes_secret_hasher_round_trip() -> None:
    hasher = fast_hasher()
    secret = generate_secret()
    stored = hasher.hash(secret)
    scheme, n, r, p, salt, derived = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "1024", "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(derived)) == 32
    assert secret not in stored
    assert hasher.verify(secret, stored)
    assert not hasher.verify(secret + "x", stored)
    assert not hasher.verify("", stored)


def test_codes_secret_hasher_salts_each_hash() -> None:
    hasher = fast_hasher()
    first, second = hasher.hash("gtw_same"), hasher.hash("gtw_same")
    assert first != second
    assert hasher.verify("gtw_same", first) and hasher.verify("gtw_same", second)


def test_codes_secret_hasher_is_peppered() -> None:
    stored = fast_hasher().hash("gtw_abc")
    assert not fast_hasher(OTHER_SECRET).verify("gtw_abc", stored)
    # Without the pepper, plain scrypt of the secret does not give the stored hash.
    _, n, r, p, salt, derived = stored.split("$")
    plain = hashlib.scrypt(b"gtw_abc", salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    assert plain[:32].hex() != derived


def test_codes_secret_hasher_verifies_with_stored_parameters() -> None:
    stored = SecretHasher(SERVER_SECRET, n=2**11, r=4, p=1).hash("gtw_abc")
    hasher = fast_hasher()
    assert hasher.verify("gtw_abc", stored)
    assert hasher.needs_rehash(stored)
    assert not hasher.needs_rehash(hasher.hash("gtw_abc"))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$1024$8$1$00$00",
        "scrypt$1024$8$1$zz$" + "00" * 32,
        "scrypt$1024$8$1$$" + "00" * 32,
        "scrypt$1024$8$1$00$0000",
        "scrypt$1000$8$1$00$" + "00" * 32,  # n not a power of two
        f"scrypt${2**30}$8$1$00$" + "00" * 32,  # would allocate far too much
        "scrypt$1024$8$1$00$" + "00" * 32 + "$extra",
        "scrypt$x$8$1$00$" + "00" * 32,
    ],
)
def test_codes_secret_hasher_rejects_malformed_stored(stored: str) -> None:
    assert fast_hasher().verify("gtw_abc", stored) is False


def test_codes_secret_hasher_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        SecretHasher(SERVER_SECRET, n=1000)


def test_codes_secret_hasher_default_parameters() -> None:
    stored = SecretHasher(SERVER_SECRET).hash("gtw_abc")
    assert stored.startswith("scrypt$16384$8$1$")


def test_codes_lookup_id_is_keyed_short_and_stable() -> None:
    hasher = fast_hasher()
    lookup = hasher.lookup_id("gtw_abc")
    assert len(lookup) == 16 and int(lookup, 16) >= 0
    assert lookup == hasher.lookup_id("gtw_abc")
    assert lookup != hasher.lookup_id("gtw_abd")
    assert lookup != fast_hasher(OTHER_SECRET).lookup_id("gtw_abc")
    # Separate purpose from code digests even under the same server secret.
    assert not CodeHasher(SERVER_SECRET).digest("gtw_abc").startswith(lookup)
