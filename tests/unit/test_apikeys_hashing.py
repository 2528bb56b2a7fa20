"""API keys as pure logic: the format, the keyed hash, the scope a role gives."""

from __future__ import annotations

import pytest

from gateway.apikeys import ApiKeyHasher, Principal, Role, _check_request
from gateway.errors import InputError


def test_hash_is_keyed_and_hides_the_secret() -> None:
    hasher = ApiKeyHasher(b"k" * 32)
    stored = hasher.digest("lookup", "secret-part")
    assert "secret-part" not in stored and stored.startswith("hmac-sha256:")
    assert hasher.matches("lookup", "secret-part", stored)
    assert not hasher.matches("lookup", "secret-parT", stored)
    assert not hasher.matches("lookup2", "secret-part", stored)
    assert ApiKeyHasher(b"j" * 32).digest("lookup", "secret-part") != stored


def test_admin_sees_every_court_greffe_only_its_own() -> None:
    admin = Principal(1, Role.ADMIN, frozenset())
    greffe = Principal(2, Role.GREFFE, frozenset({"TJ75"}))
    assert admin.scope is None and admin.is_admin
    assert greffe.scope == frozenset({"TJ75"}) and not greffe.is_admin
    assert greffe.actor == "api-key:2"


def test_key_requests_checked() -> None:
    assert _check_request("greffe", ["tj75", "TJ75", "tj13"], " sync ") == (
        Role.GREFFE, ("TJ75", "TJ13"), "sync"
    )  # fmt: skip
    for role, courts, reason in (
        ("root", [], "invalid role"),
        ("greffe", [], "at least one court"),
        ("admin", ["TJ75"], "every court"),
        ("greffe", ["-bad"], "court code"),
    ):
        with pytest.raises(InputError, match=reason):
            _check_request(role, courts, "")
