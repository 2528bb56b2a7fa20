"""Credential secrets: their form, their lookup id, their argon2id hash."""

from __future__ import annotations

import itertools

from gateway.credentials.tokens import CredentialHasher, lookup_id_of, new_secret

# Cheap parameters: the hashing logic, not its cost, is under test here.
FAST = CredentialHasher(time_cost=1, memory_kib=8, parallelism=1)


def test_new_secret_has_lookup_id_and_256_bits() -> None:
    counter = itertools.count()
    secret = new_secret(lambda n: bytes(next(counter) % 256 for _ in range(n)))
    lookup, _, hidden = secret.text.partition(".")
    assert lookup == secret.lookup_id == "0001020304050607"
    assert len(hidden) == 43 and "=" not in hidden
    assert lookup_id_of(secret.text) == lookup
    assert secret.text not in repr(secret)


def test_secrets_differ() -> None:
    assert new_secret().text != new_secret().text


def test_lookup_id_of_refuses_other_forms() -> None:
    good = new_secret().text
    assert lookup_id_of(f"  {good}\n") == good.split(".")[0]
    for bad in ("", "motdepasse", good.upper(), good + "x", good.replace(".", ":"), "." + good):
        assert lookup_id_of(bad) is None, bad


def test_hash_verifies_only_its_secret() -> None:
    secret = new_secret().text
    stored = FAST.hash(secret)
    assert stored.startswith("$argon2id$") and secret.split(".")[1] not in stored
    assert FAST.verify(stored, secret)
    assert not FAST.verify(stored, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not FAST.verify("not a hash", secret)


def test_rehash_needed_when_parameters_change() -> None:
    stored = FAST.hash("x")
    assert not FAST.needs_rehash(stored)
    assert CredentialHasher(time_cost=2, memory_kib=8, parallelism=1).needs_rehash(stored)


def test_burn_spends_a_verification_and_accepts_nothing() -> None:
    FAST.burn(new_secret().text)  # no row: nothing to compare, but the same cost
