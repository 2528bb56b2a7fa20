"""Pure pieces of the console's defences: TOTP steps, the sealed secret, the after-login target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from gateway.console.auth_pages import safe_next
from gateway.users import SecretBox, totp_step

SECRET = pyotp.random_base32(32)
NOW = datetime(2026, 12, 2, 10, 0, 15, tzinfo=UTC)


def test_totp_step_accepts_one_step_of_drift_and_no_more() -> None:
    totp = pyotp.TOTP(SECRET)
    step = int(NOW.timestamp()) // 30
    assert totp_step(totp.at(NOW), SECRET, NOW) == step
    assert totp_step(totp.at(NOW - timedelta(seconds=30)), SECRET, NOW) == step - 1
    assert totp_step(totp.at(NOW + timedelta(seconds=30)), SECRET, NOW) == step + 1
    assert totp_step(totp.at(NOW - timedelta(seconds=90)), SECRET, NOW) is None
    assert totp_step("12345", SECRET, NOW) is None
    assert totp_step("abcdef", SECRET, NOW) is None


def test_sealed_totp_secret_opens_only_for_its_account_and_server_secret() -> None:
    box = SecretBox(b"s" * 32)
    sealed = box.seal(7, SECRET)
    assert SECRET not in sealed
    assert box.open(7, sealed) == SECRET
    with pytest.raises(ValueError):
        box.open(8, sealed)  # a row's secret copied onto another account
    with pytest.raises(ValueError):
        SecretBox(b"t" * 32).open(7, sealed)


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/console/", "/console/../admin", "/autre/",
     "/console/\\evil", "javascript:alert(1)", ""],
)  # fmt: skip
def test_open_redirect_after_login_is_refused(target: str) -> None:
    assert safe_next("/console", target) == "/console/"


def test_after_login_goes_back_to_the_console_page_asked_for() -> None:
    assert (
        safe_next("/console", "/console/requetes/TJ-2026-1?x=1")
        == "/console/requetes/TJ-2026-1?x=1"
    )
